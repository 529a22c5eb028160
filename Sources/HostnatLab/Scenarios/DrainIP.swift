struct DrainIP: FaultScenario {
  let name = "drain-ip"
  let summary = "move a NAT IP to the drain pool under traffic; its flows go on, every new flow uses the other IP"

  func inject(_ c: ScenarioContext) async throws {
    let addresses = c.topology.addresses ?? []
    guard addresses.count >= 2, let first = addresses.first?.address, let second = addresses.dropFirst().first?.address else {
      throw LabError("drain-ip needs two reserved addresses in the topology")
    }
    try await c.lab.waitUntil(timeout: .seconds(10), "flows on \(first)") { (c.flowsByNatIP()[first] ?? 0) > 0 }
    let before = c.flowsByNatIP()
    c.markFaultStart()
    try await c.setNatIPs(active: [addresses[1].name], drained: [addresses[0].name])
    try await c.lab.waitForConvergence(c.admin, hosts: c.topology.hosts, timeout: .seconds(20))
    try await Task.sleep(for: .seconds(4))
    let after = c.flowsByNatIP()
    let blocks = c.heldBlocks().filter { c.natVMs.contains($0.key) }
    let everyVMHasBoth = blocks.values.allSatisfy { b in b.contains { $0.hasPrefix(first + ":") } && b.contains { $0.hasPrefix(second + ":") } }
    c.check("drained blocks stay, new blocks on the other IP", everyVMHasBoth, "every NATed VM holds a drained block on \(first) and an active one on \(second)")
    c.check("new flows use the other IP", (after[second] ?? 0) > 0, "open flows by NAT IP: before \(before), after \(after)")
    c.check("existing flows on the drained IP go on", (after[first] ?? 0) > 0, "\(after[first] ?? 0) flows still on \(first) (long-lived TCP, UDP mappings)")
    c.markFaultEnd()
    try await c.setNatIPs(active: addresses.prefix(2).map(\.name), drained: [])
    try await c.healAndConverge()
  }
}
