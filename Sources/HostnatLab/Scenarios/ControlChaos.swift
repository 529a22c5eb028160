import HostnatContracts

struct ControlChaos: FaultScenario {
  let name = "control-chaos"
  let summary = "drop, delay and duplicate control messages while NAT changes are made; every host converges, never to an older version"

  func inject(_ c: ScenarioContext) async throws {
    c.markFaultStart()
    for host in c.topology.hosts { try c.lab.setControlFaults("agent/\(host)", { var f = ControlFaults(); f.drop = 0.3; f.delayMs = 50; f.duplicate = 0.3; return f }()) }
    c.say("  chaos: control messages of every agent dropped 30%, delayed 50 ms, duplicated 30%")
    var applied: [String: [UInt64]] = [:]
    var last: [String: UInt64] = [:]
    for (i, timeout) in [31, 32, 33].enumerated() {
      last = try await c.changeUDPTimeout(UInt32(timeout))
      for _ in 0..<(i == 2 ? 40 : 15) {
        for host in c.topology.hosts { applied[host, default: []].append(c.agentStatus(host)?.control.appliedVersion ?? 0) }
        try await Task.sleep(for: .milliseconds(100))
      }
    }
    c.markFaultEnd()
    for host in c.topology.hosts { try c.lab.setControlFaults("agent/\(host)", ControlFaults()) }
    c.say("  chaos: control messages undisturbed again")
    try await c.healAndConverge(timeout: .seconds(40))
    try? await c.lab.waitUntil(timeout: .seconds(5)) { c.topology.hosts.allSatisfy { (c.agentStatus($0)?.control.appliedVersion ?? 0) >= (last[$0] ?? .max) } }
    for host in c.topology.hosts { applied[host, default: []].append(c.agentStatus(host)?.control.appliedVersion ?? 0) }
    let monotonic = applied.values.allSatisfy { zip($0, $0.dropFirst()).allSatisfy { $0 <= $1 } }
    c.check("no host ever went back to an older version", monotonic,
      applied.keys.sorted().map { "\($0): \(Set(applied[$0] ?? []).sorted().map { "v\($0)" }.joined(separator: "→"))" }.joined(separator: "; "))
    let final = c.topology.hosts.map { ($0, c.agentStatus($0)?.control.appliedVersion ?? 0) }
    c.check("every host applied the latest version", final.allSatisfy { $0.1 >= (last[$0.0] ?? .max) },
      final.map { "\($0.0) v\($0.1)/v\(last[$0.0] ?? 0)" }.joined(separator: ", "))
  }
}
