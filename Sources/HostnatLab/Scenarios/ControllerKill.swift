import HostnatContracts

struct ControllerKill: FaultScenario {
  let name = "controller-kill"
  let summary = "kill -9 the controller under traffic; nothing breaks; restart and resync with the same blocks"

  func inject(_ c: ScenarioContext) async throws {
    let before = c.heldBlocks()
    c.markFaultStart()
    try await c.chaos(.kill, "controller")
    try await Task.sleep(for: .seconds(4))
    c.markFaultEnd()
    c.check("agents keep their config", c.topology.hosts.allSatisfy { c.agentStatus($0)?.control.appliedVersion ?? 0 > 0 }, "every agent still holds a version")
    try await c.chaos(.restart, "controller")
    try await c.healAndConverge()
    c.check("every VM has the same blocks", c.heldBlocks() == before, "\(before.count) VMs compared before and after")
  }
}
