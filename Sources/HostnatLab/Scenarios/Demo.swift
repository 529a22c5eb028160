import Foundation
import HostnatContracts
import HostnatProto
import Synchronization
import SwiftProtobuf

/// The README's main command: the seed's central claim shown on a live cluster. The controller is
/// killed under traffic, established and new flows keep working from the hosts' existing blocks,
/// a NAT change made meanwhile waits, and after the restart every host resyncs to it with every
/// VM's NAT IP:port blocks unchanged.
public struct DemoScenario: LabScenario {
  public let name = "demo"
  public let summary = "Cloud NAT's central claim, live: kill the controller under traffic, change NAT meanwhile, restart, resync."
  public let topology = ScenarioTopology.default
  /// Seconds of traffic in each phase.
  public var phaseSeconds: Double

  public init(phaseSeconds: Double = 4) {
    self.phaseSeconds = phaseSeconds
  }

  public func run(on lab: Lab) async throws -> any ScenarioOutcome {
    let say = lab.say
    let topology = self.topology.parsed
    var state = try await lab.up(self.topology)
    let checks = LabChecks(say: say)
    var convergeMs: Int64?
    var phase = (sent: UInt64(0), lost: UInt64(0), newFlows: UInt64(0), failed: UInt64(0))
    do {
      let admin = try LabAdmin(controller: state.controller)
      let natVMs = Set(topology.instances.filter { $0.subnet == "subnet-1" }.map(\.name))
      let region = topology.region

      say("\n1. Traffic through Cloud NAT (\(Int(phaseSeconds)) s)")
      try await Task.sleep(for: .seconds(phaseSeconds))
      let mappingBefore = try await natMappings(admin, region: region)
      var reports = state.vmReports()
      for vm in topology.instances {
        let summary = reports[vm.name]?.summary
        if natVMs.contains(vm.name) {
          let seen = summary?.latestMapping ?? ""
          let blocks = mappingBefore[vm.name] ?? []
          checks.add("\(vm.name) NATed", !seen.isEmpty && Self.mapping(seen, isIn: blocks),
            "servers saw \(seen.isEmpty ? "nothing" : seen); its blocks \(blocks.joined(separator: " "))")
        } else {
          let received = summary?.received ?? 0
          checks.add("\(vm.name) has no Internet access", (summary?.sent ?? 0) > 0 && received == 0,
            "sent \(summary?.sent ?? 0), received \(received) (subnet without NAT)")
        }
      }

      say("\n2. kill -9 the controller; traffic goes on (\(Int(phaseSeconds)) s)")
      let before = reports
      guard let controller = state.process("controller") else { throw LabError("no controller in lab.json") }
      kill(controller.pid, SIGKILL)
      try await Task.sleep(for: .milliseconds(200))
      Processes.reapChildren()
      checks.add("controller killed", !Processes.isRunning(controller.pid), "pid \(controller.pid) SIGKILL")

      // The change is made while the controller is down; the client waits for it to return.
      let changeDone = DoneFlag()
      let change = Task { () throws -> UInt32 in
        defer { changeDone.set() }
        let updated = try await admin.updateNat(region: region, mask: ["timeouts"], waitForReady: true) {
          $0.timeouts.udpIdleTimeoutSec = 45
        }
        return updated.timeouts.udpIdleTimeoutSec
      }
      try await Task.sleep(for: .seconds(phaseSeconds))
      reports = state.vmReports()
      let during = TrafficTotals.between(before, reports, natVMs)
      phase = (during.sent, during.unanswered, during.churnSucceeded, during.churnFailed)
      checks.add("no packet lost while the controller is down", during.sent > 0 && during.unanswered == 0, during.lossText)
      checks.add("established flows unbroken", during.tcpBroken == 0, "\(during.tcpBroken) TCP connections broken")
      checks.add("new flows keep working", during.churnSucceeded > 0 && during.churnFailed == 0,
        "\(during.churnSucceeded) new TCP connections, \(during.churnFailed) failed")
      let agentsUp = state.processes.filter { $0.name.hasPrefix("agent/") }.allSatisfy { Processes.isRunning($0.pid) }
      checks.add("hosts run on their last good config", agentsUp, "every agent process still running")
      checks.add("the NAT change waits", !changeDone.isSet, "update nat-1 udp idle timeout 30 → 45 s pending")

      say("\n3. Restart the controller; hosts resync")
      let restartedAt = nowMs()
      var restarted = controller
      restarted.pid = try Processes.spawn(state.executable, controller.arguments, log: controller.log)
      state.replace(restarted)
      try state.save()
      let timeout = try await change.value
      checks.add("the change went through after restart", timeout == 45, "nat-1 udp idle timeout now \(timeout) s")
      let latest = try await admin.hosts()
      try await lab.waitForConvergence(admin, hosts: topology.hosts, timeout: .seconds(30))
      convergeMs = nowMs() - restartedAt
      let after = try await admin.hosts()
      let newVersions = after.filter { $0.hostID != "edge" }.map { "\($0.hostID) v\($0.lastVersionAcked)" }.joined(separator: ", ")
      checks.add("every host acked the new version", Lab.converged(after, hosts: topology.hosts),
        "\(newVersions) in \(convergeMs ?? 0) ms after restart (versions at reconnect: \(latest.filter { $0.hostID != "edge" }.map { "v\($0.latestVersion)" }.joined(separator: ",")))")
      let mappingAfter = try await natMappings(admin, region: region)
      checks.add("every VM kept its NAT IP:port blocks", mappingAfter == mappingBefore,
        mappingAfter == mappingBefore ? "\(mappingAfter.count) VMs, identical ranges" : "before \(mappingBefore) after \(mappingAfter)")
      try await Task.sleep(for: .seconds(min(phaseSeconds, 2)))
    } catch {
      say("demo aborted: \(error)")
      checks.add("demo ran to the end", false, "\(error)")
    }

    say("\n4. Stop the lab and read the final reports")
    let final = state.vmReports()
    try? await lab.down()
    let finalReports = state.vmReports().merging(final) { newer, _ in newer }
    let natVMs = Set(topology.instances.filter { $0.subnet == "subnet-1" }.map(\.name))
    let total = TrafficTotals.between([:], finalReports, natVMs)
    checks.add("no packet lost end to end", total.sent > 0 && total.unanswered == 0, "by NATed VMs: \(total.lossText)")
    checks.add("no flow broken", total.tcpBroken == 0, "\(total.tcpBroken) TCP connections broken")
    let eim = natVMs.sorted().map { (name: $0, same: finalReports[$0]?.summary.eimSameMapping) }
    checks.add("endpoint-independent mapping", eim.allSatisfy { $0.same == true },
      eim.map { "\($0.name): \($0.same.map { $0 ? "same NAT IP:port at whoami and STUN" : "DIFFERENT" } ?? "not seen")" }.joined(separator: "; "))
    let unsolicited = natVMs.reduce(UInt64(0)) { $0 + (finalReports[$1]?.summary.unsolicited ?? 0) }
    let probes = natVMs.reduce(UInt64(0)) { $0 + (finalReports[$1]?.summary.probeAcks ?? 0) }
    checks.add("endpoint-dependent filtering", probes > 0 && unsolicited == 0,
      "\(probes) probe answers received, \(unsolicited) unsolicited packets let in")
    let list = checks.list
    let passed = list.allSatisfy(\.passed)
    say("\n\(passed ? "PASSED" : "FAILED"): \(list.filter(\.passed).count)/\(list.count) checks held. Logs: \(lab.dir)/logs")
    return ScenarioReport(
      scenario: name, passed: passed, checks: list, packets_sent: total.sent, packets_lost: total.unanswered,
      flows_broken: total.tcpBroken, new_flows_during_fault: phase.newFlows, new_flows_failed_during_fault: phase.failed,
      converge_ms: convergeMs, dir: lab.dir)
  }

  /// VM name → its NAT IP:port ranges ("IP:FIRST-LAST", active and drained) from the controller.
  func natMappings(_ admin: LabAdmin, region: String) async throws -> [String: [String]] {
    let info = try await admin.with { client, options in
      try await client.getNatMappingInfo(.with { $0.region = region; $0.router = "router-1" }, options: options)
    }
    var result: [String: [String]] = [:]
    for vm in info.result {
      result[vm.instanceName] = vm.interfaceNatMappings.flatMap { $0.natIpPortRanges + $0.drainNatIpPortRanges }.sorted()
    }
    return result
  }

  static func mapping(_ seen: String, isIn ranges: [String]) -> Bool {
    let parts = seen.split(separator: ":")
    guard parts.count == 2, let port = Int(parts[1]) else { return false }
    return ranges.contains { range in
      let r = range.split(separator: ":")
      guard r.count == 2, r[0] == parts[0] else { return false }
      let bounds = r[1].split(separator: "-").compactMap { Int($0) }
      return bounds.count == 2 && (bounds[0]...bounds[1]).contains(port)
    }
  }
}

/// Set once, read from anywhere.
final class DoneFlag: Sendable {
  private let value = Mutex(false)
  func set() { value.withLock { $0 = true } }
  var isSet: Bool { value.withLock { $0 } }
}
