import HostnatAddressing
import HostnatContracts
import HostnatDataplane
import HostnatProto

struct BadConfig: FaultScenario {
  let name = "bad-config"
  let summary = "a config the agent must reject reaches one host; it NACKs with the reason, keeps translating on its previous version, then recovers"

  func inject(_ c: ScenarioContext) async throws {
    let host = c.topology.hosts[1]
    let held = c.agentStatus(host)?.control.appliedVersion ?? 0
    let nacksBefore = c.agentStatus(host)?.control.nacks ?? 0
    c.markFaultStart()
    var faults = try c.lab.controlFaults("agent/\(host)")
    faults.corruptPushesUntilMs = nowMs() + 3000
    try c.lab.setControlFaults("agent/\(host)", faults)
    try await Task.sleep(for: .milliseconds(300))
    c.say("  chaos: pushes to \(host) made invalid on the way for 3 s")
    let versions = try await c.changeUDPTimeout(35)
    try await c.lab.waitUntil(timeout: .seconds(5), "\(host) to NACK") { (c.agentStatus(host)?.control.nacks ?? 0) > nacksBefore }
    let status = c.agentStatus(host)
    c.check("the host NACKs with the reason", status?.control.lastNack?.contains("primaryIp") == true,
      "NACK: \(status?.control.lastNack ?? "none")")
    c.check("the previous config stays in force", status?.control.appliedVersion == held && status?.dataplane.appliedVersion == held,
      "still on v\(held) (the controller has v\(versions[host] ?? 0))")
    let seen = try await c.admin.hosts().first { $0.hostID == host }
    c.check("the controller shows the NACK", seen?.lastNackReason.contains("primaryIp") == true, "hosts list: \(seen?.lastNackReason ?? "-")")
    try await Task.sleep(for: .seconds(3))
    c.markFaultEnd()
    try await c.healAndConverge()
    try? await c.lab.waitUntil(timeout: .seconds(5)) { (c.agentStatus(host)?.control.appliedVersion ?? 0) >= (versions[host] ?? .max) }
    let applied = c.agentStatus(host)?.control.appliedVersion ?? 0
    c.check("the host applies the good config once it arrives", applied >= (versions[host] ?? .max),
      "v\(applied) applied after the controller resent it")
  }
}
