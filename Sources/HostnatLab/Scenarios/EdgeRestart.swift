import HostnatAddressing
import HostnatContracts
import HostnatDataplane

struct EdgeRestart: FaultScenario {
  let name = "edge-restart"
  let summary = "kill -9 the edge and start it again with the controller down; it routes from its saved routes"
  let expectations = ScenarioExpectations(loss: .faultOnly(why: "a restart drops what arrives while the process is gone"), flows: .reconnect)

  func inject(_ c: ScenarioContext) async throws {
    c.markFaultStart()
    try await c.chaos(.kill, "controller")
    try await c.chaos(.restart, "edge")
    let edgeDir = c.state.process("edge")?.stateDir ?? ""
    try await c.lab.waitUntil(timeout: .seconds(10), "edge status") {
      let s: EdgeStatus? = Lab.readJSON(edgeDir + "/status.json")
      return s?.pid == c.state.process("edge")?.pid && (s?.dataplane.routed ?? 0) > 0
    }
    let status: EdgeStatus? = Lab.readJSON(edgeDir + "/status.json")
    c.check("edge routes from its saved routes", (status?.routes ?? 0) > 0 && status?.control.connected == false,
      "\(status?.routes ?? 0) routes from disk, routed \(status?.dataplane.routed ?? 0) packets with no controller")
    try await Task.sleep(for: .seconds(2))
    c.markFaultEnd()
    try await c.chaos(.restart, "controller")
    try await c.healAndConverge()
  }
}
