import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The lab end to end with the real binary: a whole cluster of processes on loopback.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct LabEndToEndTests {
  func pids(_ dir: String) throws -> [(String, Int32)] {
    let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/lab.json"))
    let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let processes = try #require(object["processes"] as? [[String: Any]])
    return processes.compactMap { p in
      guard let name = p["name"] as? String, let pid = p["pid"] as? Int else { return nil }
      return (name, Int32(pid))
    }
  }

  func running(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    return !stat.contains(") Z ")
  }

  /// The README's main command: every check of the central claim holds, and nothing is left running.
  @Test func demoPassesAndCleansUp() async throws {
    let dir = try TemporaryDirectory()
    let result = try await Hostnat.run(["lab", "demo", "--dir", dir.path + "/lab", "--json", "--phase-seconds", "3"], timeout: .seconds(180))
    let line = try #require(result.stdout.split(separator: "\n").last, "stdout: \(result.stdout) stderr: \(result.stderr)")
    let report = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    let checks = (report["checks"] as? [[String: Any]]) ?? []
    let failed = checks.filter { ($0["passed"] as? Bool) != true }.map { "\($0["name"] ?? "?"): \($0["detail"] ?? "")" }
    #expect(result.exitCode == 0, "failed checks: \(failed)")
    #expect(report["passed"] as? Bool == true)
    #expect(failed.isEmpty, "\(failed)")
    #expect(checks.count >= 15)
    #expect((report["packets_sent"] as? Int ?? 0) > 500)
    #expect(report["packets_lost"] as? Int == 0)
    #expect(report["flows_broken"] as? Int == 0)
    #expect((report["new_flows_during_fault"] as? Int ?? 0) > 0)
    #expect(report["converge_ms"] is Int)
    for (name, pid) in try pids(dir.path + "/lab") {
      #expect(!running(pid), "\(name) (pid \(pid)) still running after the demo")
    }
  }

  /// A topology the controller refuses: `lab up` fails with the controller's reason and leaves
  /// nothing running.
  @Test func failedUpLeavesNothingRunning() async throws {
    let dir = try TemporaryDirectory()
    let yaml = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("deploy/lab/default.yaml"), encoding: .utf8)
      .replacingOccurrences(of: "natIps: [nat-ip-1, nat-ip-2]", with: "natIps: [nat-ip-1, no-such-address]")
    let file = dir.path + "/bad.yaml"
    try yaml.write(toFile: file, atomically: true, encoding: .utf8)
    let up = try await Hostnat.run(["lab", "up", "--dir", dir.path + "/lab", "--topology", file], timeout: .seconds(90))
    #expect(up.exitCode != 0)
    #expect(up.stderr.contains("nat nat-1") && up.stderr.contains("no-such-address"), "\(up.stderr)")
    for (name, pid) in try pids(dir.path + "/lab") {
      #expect(!running(pid), "\(name) (pid \(pid)) left running after a failed lab up")
    }
  }

  /// up → status → down by hand, as a user would, checking the cluster's traffic from its reports.
  @Test func upStatusDown() async throws {
    let dir = try TemporaryDirectory()
    let lab = dir.path + "/lab"
    let up = try await Hostnat.run(["lab", "up", "--dir", lab], timeout: .seconds(90))
    defer { labDownNow(lab) }
    #expect(up.exitCode == 0, "\(up.stderr)")
    #expect(up.stdout.contains("agent/host-3") && up.stdout.contains("vm/vm-6") && up.stdout.contains("logs/"))

    let again = try await Hostnat.run(["lab", "up", "--dir", lab], timeout: .seconds(30))
    #expect(again.exitCode != 0 && again.stderr.contains("already running"))

    try await Task.sleep(for: .seconds(3))
    let status = try await Hostnat.run(["lab", "status", "--dir", lab, "--json"], timeout: .seconds(30))
    #expect(status.exitCode == 0, "\(status.stderr)")
    let object = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])
    let processes = try #require(object["processes"] as? [[String: Any]])
    #expect(processes.count == 15, "controller, edge, 3 agents, 6 VMs, 4 control proxies")
    #expect(processes.allSatisfy { $0["state"] as? String == "up" }, "\(processes)")
    let hosts = try #require(object["hosts"] as? [[String: Any]])
    #expect(hosts.count == 3)
    for host in hosts {
      #expect(host["agentConnected"] as? Bool == true)
      #expect(host["versionAcked"] as? Int == host["latestVersion"] as? Int)
    }
    let vms = try #require(object["vms"] as? [[String: Any]])
    for vm in vms {
      let name = vm["name"] as? String ?? ""
      let mapping = vm["natMapping"] as? String ?? ""
      if ["vm-5", "vm-6"].contains(name) {
        #expect(vm["received"] as? Int == 0 && (vm["sent"] as? Int ?? 0) > 0, "\(name) is in the subnet without NAT")
        #expect(mapping.isEmpty)
      } else {
        #expect(mapping.hasPrefix("203.0.113.1:") || mapping.hasPrefix("203.0.113.2:"), "\(name) seen as \(mapping)")
        #expect((vm["received"] as? Int ?? 0) > 0)
      }
    }
    let text = try await Hostnat.run(["lab", "status", "--dir", lab], timeout: .seconds(30))
    #expect(text.stdout.contains("NAT IP:PORT") && text.stdout.contains("host-2"))

    // The live view, one frame: every section, and readable at 80 columns.
    let top = try await Hostnat.run(["lab", "top", "--dir", lab, "--iterations", "1"], timeout: .seconds(30))
    #expect(top.exitCode == 0, "\(top.stderr)")
    for heading in ["HOST", "PORTS USED", "NAT IP", "203.0.113.1", "/64512"] { #expect(top.stdout.contains(heading), "\(heading)") }
    let wide = top.stdout.split(separator: "\n").filter { $0.count > 80 }
    #expect(wide.isEmpty, "lines over 80 columns: \(wide)")

    // NAT logs in Cloud NAT's shape, read across the agents like `gcloud logging read`.
    let logs = try await Hostnat.run(["logs", "read", "--dir", lab, "--limit", "5", "--format", "json"], timeout: .seconds(30))
    #expect(logs.exitCode == 0, "\(logs.stderr)")
    let entries = logs.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    #expect(entries.count == 5)
    for entry in entries {
      let payload = entry["jsonPayload"] as? [String: Any]
      let connection = payload?["connection"] as? [String: Any]
      #expect((connection?["nat_ip"] as? String)?.hasPrefix("203.0.113.") == true, "\(entry)")
      #expect(payload?["allocation_status"] as? String == "OK")
      #expect((payload?["gateway_identifiers"] as? [String: Any])?["gateway_name"] as? String == "nat-1")
      #expect(((payload?["vpc"] as? [String: Any])?["subnetwork_name"] as? String) == "subnet-1")
    }
    let vm2 = try await Hostnat.run(["logs", "read", "--dir", lab, "--filter", "jsonPayload.endpoint.vm_name=vm-2", "--limit", "3"], timeout: .seconds(30))
    #expect(vm2.exitCode == 0 && vm2.stdout.contains("10.240.0.3") && !vm2.stdout.contains("10.240.0.2:"), "\(vm2.stdout)")
    let badFilter = try await Hostnat.run(["logs", "read", "--dir", lab, "--filter", "jsonPayload.nope=1"], timeout: .seconds(30))
    #expect(badFilter.exitCode != 0 && badFilter.stderr.contains("--filter"))

    let down = try await Hostnat.run(["lab", "down", "--dir", lab], timeout: .seconds(60))
    #expect(down.exitCode == 0, "\(down.stderr)")
    for (name, pid) in try pids(lab) {
      #expect(!running(pid), "\(name) (pid \(pid)) still running after lab down")
    }
    #expect(FileManager.default.fileExists(atPath: lab + "/logs/controller.log"), "logs stay")
  }
}
