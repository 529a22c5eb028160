import HostnatAddressing
import HostnatContracts
import HostnatDataplane

struct AgentRestart: FaultScenario {
  let name = "agent-restart"
  let summary = "restart one agent under traffic (SIGTERM, kill -9, and kill -9 with the controller down); same blocks, flow table reattached"
  let expectations = ScenarioExpectations(loss: .faultOnly(why: "a restart drops what arrives while the process is gone"))

  func inject(_ c: ScenarioContext) async throws {
    let host = c.topology.hosts[0]
    let before = c.heldBlocks()
    c.markFaultStart()
    for (label, graceful, controllerDown) in [("SIGTERM", true, false), ("kill -9", false, false), ("kill -9, controller down", false, true)] {
      if controllerDown { try await c.chaos(.kill, "controller") }
      let started = nowMs()
      try await c.chaos(.restart, "agent/\(host)", graceful: graceful)
      let newPid = c.state.process("agent/\(host)")?.pid ?? 0
      try await c.lab.waitUntil(timeout: .seconds(20), "agent/\(host) back") {
        guard let s = c.agentStatus(host) else { return false }
        return s.pid == newPid && s.dataplane.loop.sent > 0
      }
      let blackout = nowMs() - started
      let status = c.agentStatus(host)
      c.check("\(host) back after \(label)", status?.flowTableAttached == true && (status?.control.appliedVersion ?? 0) > 0,
        "forwarding again \(blackout) ms after the signal; flow table \(status?.flowTableAttached == true ? "reattached" : "NEW"), config v\(status?.control.appliedVersion ?? 0) from disk")
      try await Task.sleep(for: .seconds(2))
      if controllerDown { try await c.chaos(.restart, "controller") }
    }
    c.markFaultEnd()
    try await c.healAndConverge()
    c.check("same blocks after the restarts", c.heldBlocks() == before, "\(before.count) VMs compared")
  }
}
