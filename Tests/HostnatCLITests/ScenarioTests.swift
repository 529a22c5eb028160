import Foundation
import Testing

/// Every failure scenario on one shared lab (to keep CI time down): each must pass, and each
/// ends with the cluster-wide check that no NAT IP:port block is held by two hosts. Then the two
/// scenarios with their own lab (serverless-egress, vpc-edges): one lab at a time, since two
/// labs' traffic on 2 cores starves the scenarios' own timing.
@Suite(.serialized, .timeLimit(.minutes(15)))
struct ScenarioTests {
  @Test func listNamesEveryScenario() async throws {
    let list = try await Hostnat.run(["lab", "scenario", "--list"])
    #expect(list.exitCode == 0)
    for name in ["controller-kill", "controller-pause", "control-partition", "agent-restart", "edge-restart", "control-chaos", "bad-config", "drain-ip", "remove-ip-undrained", "controller-crash-during-writes", "port-exhaustion", "dpa-crash", "serverless-egress", "vpc-edges"] {
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

  /// Runs a scenario that brings up its own lab and returns its JSON report, checked passed.
  static func ownLabScenario(_ name: String) async throws -> [String: Any] {
    let dir = try TemporaryDirectory()
    let run = try await Hostnat.run(["lab", "scenario", name, "--dir", dir.path + "/lab", "--json"], timeout: .seconds(150))
    defer { labDownNow(dir.path + "/lab") }
    let line = run.stdout.split(separator: "\n").last.map(String.init) ?? ""
    let report = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(run.stdout) \(run.stderr)")
    let checks = (report["checks"] as? [[String: Any]]) ?? []
    let failed = checks.filter { ($0["passed"] as? Bool) != true }.map { "\($0["name"] ?? "?"): \($0["detail"] ?? "")" }
    #expect(run.exitCode == 0 && report["passed"] as? Bool == true, "\(name): \(failed) \(run.stderr)")
    #expect(report["scenario"] as? String == name)
    return report
  }

  /// The seed's walkthrough on a live lab: which source IP each service was seen from.
  @Test func serverlessEgressReportsTheSourceIPPerService() async throws {
    let report = try await Self.ownLabScenario("serverless-egress")
    let natIP = try #require(report["nat_ip"] as? String)
    #expect(natIP == "203.0.113.10")
    let services = Dictionary(uniqueKeysWithValues: ((report["services"] as? [[String: Any]]) ?? []).map { ($0["name"] as? String ?? "", $0) })
    for name in ["service-a", "service-b", "service-c", "my-api-service"] {
      #expect(services[name]?["seen_from"] as? [String] == [natIP], "\(name): \(services[name] ?? [:])")
    }
    let privateOnly = try #require(services["nat-test-private"])
    let egress = try #require(privateOnly["serverless_egress_ip"] as? String)
    #expect(egress.hasPrefix("192.0.2.") && privateOnly["seen_from"] as? [String] == [egress], "\(privateOnly)")
    #expect((privateOnly["private_range_path"] as? String)?.hasPrefix("connector-instance:cloudrun-connector-") == true)
    // Private ranges are sent, through the connector and the VPC fabric, untranslated: the
    // private VM sees a connector instance's address (10.8.0.0/28), and Direct VPC egress sources
    // (which its ingress rule does not allow) are refused.
    for name in ["service-a", "service-b", "service-c", "nat-test-private"] {
      let seen = services[name]?["private_seen_from"] as? [String] ?? []
      #expect(!seen.isEmpty && seen.allSatisfy { $0.hasPrefix("10.8.0.") }, "\(name): \(seen)")
    }
    #expect(services["my-api-service"]?["private_seen_from"] as? [String] == [])
    #expect(report["passed"] as? Bool == true, "\(report["checks"] ?? [])")
    #expect((report["connector_instances_before"] as? [String])?.count == 2)
    #expect((report["connector_instances_scaled"] as? [String])?.count == 4)
    #expect((report["connector_instances_after"] as? [String])?.count == 2)
  }

  @Test func vpcEdgesOnALiveLab() async throws {
    let report = try await Self.ownLabScenario("vpc-edges")
    let names = ((report["checks"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }
    for expected in ["Private Google Access leaves with the internal IP, never the NAT IP", "a NAT rule picks the NAT IP by destination",
                     "a rule with target tags spares VMs without them",
                     "a connection opened before the tag goes on (rules are stateful)",
                     "tagging the VM puts it under the egress deny rule: dropped before NAT, only what it matches", "a route to a next-hop instance takes its destination away from NAT",
                     "a service project's VM is NATed by its Shared VPC host project's gateway", "peering does not carry NAT",
                     "each NIC is NATed by its own network's gateway"] {
      #expect(names.contains(expected), "\(expected) missing from \(names)")
    }
  }
}
