import Foundation
import Testing

/// Every failure scenario on one shared lab (to keep CI time down): each must pass, and each
/// ends with the cluster-wide check that no NAT IP:port block is held by two hosts.
@Suite(.serialized, .timeLimit(.minutes(15)))
struct ScenarioTests {
  @Test func listNamesEveryScenario() async throws {
    let list = try await Hostnat.run(["lab", "scenario", "--list"])
    #expect(list.exitCode == 0)
    for name in ["controller-kill", "controller-pause", "control-partition", "agent-restart", "edge-restart", "control-chaos", "bad-config", "drain-ip", "remove-ip-undrained", "controller-crash-during-writes", "port-exhaustion", "dpa-crash"] {
      #expect(list.stdout.contains(name), "\(name) missing from --list")
    }
    let unknown = try await Hostnat.run(["lab", "scenario", "no-such-thing"])
    #expect(unknown.exitCode != 0 && unknown.stderr.contains("no scenario no-such-thing"))
  }

  @Test func everyScenarioPassesOnOneLab() async throws {
    let dir = try TemporaryDirectory()
    let lab = dir.path + "/lab"
    let up = try await Hostnat.run(["lab", "up", "--dir", lab], timeout: .seconds(90))
    #expect(up.exitCode == 0, "\(up.stderr)")
    defer { labDownNow(lab) }
    for name in ["controller-kill", "controller-pause", "control-partition", "agent-restart", "edge-restart", "control-chaos", "bad-config", "drain-ip", "remove-ip-undrained", "controller-crash-during-writes", "port-exhaustion", "dpa-crash"] {
      let run = try await Hostnat.run(["lab", "scenario", name, "--dir", lab, "--json"], timeout: .seconds(150))
      let line = run.stdout.split(separator: "\n").last.map(String.init) ?? ""
      let report = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
      let checks = (report?["checks"] as? [[String: Any]]) ?? []
      let failed = checks.filter { ($0["passed"] as? Bool) != true }.map { "\($0["name"] ?? "?"): \($0["detail"] ?? "")" }
      #expect(run.exitCode == 0 && report?["passed"] as? Bool == true, "\(name): \(failed) \(run.stderr)")
      #expect(report?["scenario"] as? String == name)
      #expect(checks.contains { $0["name"] as? String == "no NAT IP:port owned by two hosts" && $0["passed"] as? Bool == true }, "\(name)")
      for key in ["packets_sent", "packets_lost", "flows_broken", "new_flows_during_fault", "new_flows_failed_during_fault"] {
        #expect(report?[key] is Int, "\(name): \(key)")
      }
    }
    let down = try await Hostnat.run(["lab", "down", "--dir", lab], timeout: .seconds(60))
    #expect(down.exitCode == 0)
  }
}
