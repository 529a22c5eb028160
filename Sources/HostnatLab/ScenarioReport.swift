import Foundation
public import HostnatContracts
import Synchronization

/// One check of a demo or scenario: what was checked, whether it held, and the numbers behind it.
public struct Check: Codable, Sendable {
  public var name: String
  public var passed: Bool
  public var detail: String
}

/// The report of `hostnat lab demo` and of the fault scenarios.
public struct ScenarioReport: Codable, Sendable {
  public var scenario: String
  public var passed: Bool
  public var checks: [Check]
  public var packets_sent: UInt64
  public var packets_lost: UInt64
  public var flows_broken: UInt64
  public var new_flows_during_fault: UInt64
  public var new_flows_failed_during_fault: UInt64
  public var converge_ms: Int64?
  public var dir: String
}

/// A report `--json` prints as one line.
public protocol JSONReport: Encodable {}

extension JSONReport {
  /// One JSON object, keys sorted.
  public func json() -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
  }
}

extension ScenarioReport: JSONReport {}

/// The checks of one run, in order, each printed as it is made. Scenarios record from their own
/// tasks (a burst of admin calls, a wait loop), so the list is behind a lock.
final class LabChecks: Sendable {
  private let recorded = Mutex<[Check]>([])
  let say: @Sendable (String) -> Void

  init(say: @escaping @Sendable (String) -> Void) { self.say = say }

  func add(_ name: String, _ passed: Bool, _ detail: String) {
    recorded.withLock { $0.append(Check(name: name, passed: passed, detail: detail)) }
    say("  [\(passed ? "ok" : "FAIL")] \(name): \(detail)")
  }

  /// The checks so far.
  var list: [Check] { recorded.withLock { $0 } }
}

/// The NATed VMs' traffic counters between two sets of VM reports.
public struct TrafficTotals: Sendable {
  var sent: UInt64 = 0
  var lost: UInt64 = 0
  var late: UInt64 = 0
  /// Requests never answered: a reply that came after the loss timeout (a starved CPU, not the
  /// NAT) was delivered, so it is reported as late, not lost.
  var unanswered: UInt64 { lost &- min(late, lost) }
  /// "N sent, M lost" and the late replies when there were some.
  var lossText: String { "\(sent) sent, \(unanswered) lost" + (late > 0 ? " (\(min(late, lost)) more answered after the loss timeout)" : "") }
  var tcpBroken: UInt64 = 0
  var tcpEstablished: UInt64 = 0
  var churnSucceeded: UInt64 = 0
  var churnFailed: UInt64 = 0

  /// Counters of `vms` accumulated between reports `a` and `b`.
  static func between(_ a: [String: VMReportFile], _ b: [String: VMReportFile], _ vms: Set<String>) -> TrafficTotals {
    var t = TrafficTotals()
    for name in vms {
      guard let end = b[name]?.summary else { continue }
      let start = a[name]?.summary
      t.sent += end.sent &- (start?.sent ?? 0)
      t.lost += end.lost &- (start?.lost ?? 0)
      t.late += end.late &- (start?.late ?? 0)
      t.tcpBroken += end.tcpBroken &- (start?.tcpBroken ?? 0)
      t.tcpEstablished += end.tcpEstablished &- (start?.tcpEstablished ?? 0)
      t.churnSucceeded += end.churnSucceeded &- (start?.churnSucceeded ?? 0)
      t.churnFailed += end.churnFailed &- (start?.churnFailed ?? 0)
    }
    return t
  }
}

extension LabState {
  /// Each VM's latest report (VM name → report), read from the VMs' state dirs.
  public func vmReports() -> [String: VMReportFile] {
    var result: [String: VMReportFile] = [:]
    for p in processes where p.name.hasPrefix("vm/") {
      if let file: VMReportFile = Lab.readJSON(p.stateDir + "/report.json") { result[file.name] = file }
    }
    return result
  }
}
