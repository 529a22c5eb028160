import HostnatContracts

struct RemoveIPUndrained: FaultScenario {
  let name = "remove-ip-undrained"
  let summary = "remove a NAT IP without draining; its flows break at once, as Cloud NAT documents"
  let expectations = ScenarioExpectations(loss: .faultOnly(why: "replies in flight to the removed IP are dropped"), flows: .brokenOnPurpose)

  func inject(_ c: ScenarioContext) async throws {
    let addresses = c.topology.addresses ?? []
    guard addresses.count >= 2 else { throw LabError("remove-ip-undrained needs two reserved addresses in the topology") }
    let flows = c.flowsByNatIP()
    guard let (busy, _) = flows.max(by: { $0.value < $1.value }), let busyName = addresses.first(where: { $0.address == busy })?.name,
      let other = addresses.first(where: { $0.address != busy })
    else { throw LabError("no NAT IP carries flows yet") }
    let brokenBefore = c.reports().filter { c.natVMs.contains($0.key) }.reduce(UInt64(0)) { $0 + $1.value.summary.tcpBroken }
    c.markFaultStart()
    try await c.setNatIPs(active: [other.name], drained: [])
    try await c.lab.waitForConvergence(c.admin, hosts: c.topology.hosts, timeout: .seconds(20))
    try await Task.sleep(for: .seconds(7))
    let after = c.flowsByNatIP()
    let reports = c.reports().filter { c.natVMs.contains($0.key) }
    let broken = reports.reduce(UInt64(0)) { $0 + $1.value.summary.tcpBroken } - brokenBefore
    c.check("no flow left on the removed IP", (after[busy] ?? 0) == 0, "open flows by NAT IP now: \(after)")
    c.check("its connections broke at once", broken >= UInt64(c.natVMs.count),
      "\(broken) TCP connections broken across \(c.natVMs.count) NATed VMs (each had one long-lived connection on \(busy))")
    let moved = reports.values.allSatisfy { $0.summary.latestMapping.hasPrefix((other.address ?? "") + ":") }
    c.check("the servers now see the other IP", moved, reports.keys.sorted().map { "\($0): \(reports[$0]?.summary.latestMapping ?? "-")" }.joined(separator: ", "))
    c.markFaultEnd()
    try await c.setNatIPs(active: [busyName, other.name].sorted(), drained: [])
    try await c.healAndConverge()
  }
}
