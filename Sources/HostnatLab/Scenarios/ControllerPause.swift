import HostnatContracts

struct ControllerPause: FaultScenario {
  let name = "controller-pause"
  let summary = "SIGSTOP the controller past the keepalive timeout; agents see it, the data plane never stalls"

  func inject(_ c: ScenarioContext) async throws {
    c.markFaultStart()
    try await c.chaos(.pause, "controller")
    try await Task.sleep(for: .seconds(5))
    let disconnected = c.topology.hosts.filter { c.agentStatus($0)?.control.connected == false }
    c.check("agents notice the silent controller", disconnected.count == c.topology.hosts.count,
      "\(disconnected.count)/\(c.topology.hosts.count) agents report disconnected after 5 s (timeout 3 s)")
    c.markFaultEnd()
    try await c.chaos(.resume, "controller")
    try await c.healAndConverge()
    let reconnected = c.topology.hosts.filter { c.agentStatus($0)?.control.connected == true }
    try await Task.sleep(for: .seconds(1.5))
    let now = c.topology.hosts.filter { c.agentStatus($0)?.control.connected == true }
    c.check("agents reconnect", now.count == c.topology.hosts.count, "\(max(reconnected.count, now.count))/\(c.topology.hosts.count) connected again")
  }
}
