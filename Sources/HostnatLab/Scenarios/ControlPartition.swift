import HostnatContracts
import HostnatProto

struct ControlPartition: FaultScenario {
  let name = "control-partition"
  let summary = "cut one host's control channel; a NAT change reaches the others at once and it on heal; it translates throughout"

  func inject(_ c: ScenarioContext) async throws {
    let cut = c.topology.hosts[0]
    let others = Array(c.topology.hosts.dropFirst())
    c.markFaultStart()
    try await c.chaos(.partition, "agent/\(cut)")
    try await c.lab.waitUntil(timeout: .seconds(10), "\(cut) to notice") { c.agentStatus(cut)?.control.connected == false }
    let held = c.agentStatus(cut)?.control.appliedVersion ?? 0
    let versions = try await c.changeUDPTimeout(40)
    let started = nowMs()
    // The controller's view: an ACK means applied and saved (the status files lag up to 1 s).
    let reached = (try? await c.lab.waitUntil(timeout: .seconds(10), "the other hosts to ACK the change") {
      let acked = Dictionary(try await c.admin.hosts().map { ($0.hostID, $0.lastVersionAcked) }, uniquingKeysWith: { a, _ in a })
      return others.allSatisfy { (acked[$0] ?? 0) >= (versions[$0] ?? .max) }
    }) != nil
    c.check("the change reaches the other hosts at once", reached,
      "\(others.joined(separator: ", ")) \(reached ? "acked their new versions within \(nowMs() - started) ms" : "did not ack within 10 s")")
    try await Task.sleep(for: .seconds(2))
    let stillHeld = c.agentStatus(cut)?.control.appliedVersion ?? 0
    c.check("the partitioned host keeps its version", stillHeld == held && held < (versions[cut] ?? 0),
      "\(cut) holds v\(stillHeld), the controller has v\(versions[cut] ?? 0) waiting for it")
    c.markFaultEnd()
    try await c.chaos(.heal, "agent/\(cut)")
    try await c.healAndConverge()
    // The agent's status file is rewritten every second.
    try? await c.lab.waitUntil(timeout: .seconds(5)) { (c.agentStatus(cut)?.control.appliedVersion ?? 0) >= (versions[cut] ?? .max) }
    let applied = c.agentStatus(cut)?.control.appliedVersion ?? 0
    c.check("the partitioned host gets the change on heal", applied >= (versions[cut] ?? .max), "\(cut) applied v\(applied)")
  }
}
