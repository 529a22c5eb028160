import HostnatContracts
import HostnatProto
import SwiftProtobuf

struct DPACrash: FaultScenario {
  let name = "dpa-crash"
  let summary = "with dynamic port allocation, kill -9 the controller and then the agent while a VM's ports are being doubled; no block owned twice, controller and agent agree"

  func inject(_ c: ScenarioContext) async throws {
    let vm = c.topology.instances.first { c.natVMs.contains($0.name) && $0.host == c.topology.hosts[1] } ?? c.topology.instances[0]
    c.excluded = [vm.name]
    let region = c.topology.region
    c.markFaultStart()
    for victim in ["controller", "agent/\(vm.host)"] {
      // Room for one more doubling whatever the VM holds now (earlier rounds or scenarios may
      // have taken it to the maximum), so the host does ask.
      let room = UInt32(max(2048, c.heldPorts(vm.name) * 2))
      try await c.enableDynamicPorts(max: room)
      try await c.lab.waitForConvergence(c.admin, hosts: c.topology.hosts, timeout: .seconds(20))
      let requests = c.agentStatus(vm.host)?.portRequests ?? 0
      try await c.respawnVM(vm.name, set: ["--tcp-churn-per-sec": "250"])
      // Generous: under a full test run on 2 cores the VM's churn can take a while to fill 80 %.
      try await c.lab.waitUntil(timeout: .seconds(60), "\(vm.name)'s host to ask for ports") { (c.agentStatus(vm.host)?.portRequests ?? 0) > requests }
      try await c.chaos(.kill, victim)
      try await Task.sleep(for: .seconds(1))
      try await c.respawnVM(vm.name, set: ["--tcp-churn-per-sec": "4"])
      try await c.chaos(.restart, victim)
      try await c.lab.waitForConvergence(c.admin, hosts: c.topology.hosts, timeout: .seconds(30))
      try? await c.lab.waitUntil(timeout: .seconds(5)) {
        let held = c.agentStatus(vm.host)?.control.appliedVersion ?? 0
        let latest = try await c.admin.hosts().first { $0.hostID == vm.host }?.latestVersion ?? 0
        return held >= latest
      }
      let info = try await c.admin.with { client, options in
        try await client.getNatMappingInfo(.with { $0.region = region; $0.router = "router-1" }, options: options)
      }
      let controllerView = info.result.first { $0.instanceName == vm.name }?.interfaceNatMappings.flatMap(\.natIpPortRanges).sorted() ?? []
      let agentView = (c.heldConfig(vm.host)?.vms.first { $0.instance == vm.name }?.nics.flatMap { $0.natBindings.flatMap { $0.portBlocks.filter { !$0.drained } } } ?? [])
        .map { "\($0.natIp):\($0.firstPort)-\($0.firstPort + $0.count - 1)" }.sorted()
      c.check("controller and agent agree after killing the \(victim.hasPrefix("agent") ? "agent" : "controller")", controllerView == agentView && !agentView.isEmpty,
        "controller: \(controllerView.joined(separator: " ")); agent: \(agentView.joined(separator: " "))")
      c.checkNoBlockOwnedTwice()
    }
    c.markFaultEnd()
    try await c.healAndConverge()
  }
}
