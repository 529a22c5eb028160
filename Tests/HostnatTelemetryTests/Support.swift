import HostnatAddressing
import Foundation
// LogRecord and AgentLogEntry have no public init; the tests use their memberwise ones.
import HostnatEngine
import HostnatPackets
import HostnatTestSupport
import Testing

/// A fresh directory under the system temp dir, removed by `cleanup`.
struct TempDir {
  let path: String
  init() throws {
    path = NSTemporaryDirectory() + "hostnat-telemetry-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }
  func file(_ name: String) -> String { path + "/" + name }
  func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

/// 2024-05-01T12:00:00Z in Unix nanoseconds.
let t0: UInt64 = 1_714_564_800 * 1_000_000_000
let second: UInt64 = 1_000_000_000

func record(
  at ts: UInt64, src: String = "10.0.0.2", sport: UInt16 = 34567, dst: String = "192.0.2.10", dport: UInt16 = 443,
  nat: String = "203.0.113.5", natPort: UInt16 = 40001, proto: UInt8 = 6, dropped: DropReason? = nil
) -> LogRecord {
  LogRecord(
    timestamp: ts, insideIP: ip(src), remoteIP: ip(dst), natIP: ip(nat), insidePort: sport, remotePort: dport,
    natPort: natPort, protocolNumber: proto, status: dropped == nil ? .ok : .dropped, reason: dropped, vmIndex: 0)
}

func lines(_ path: String) -> [String] {
  guard let d = FileManager.default.contents(atPath: path) else { return [] }
  return String(decoding: d, as: UTF8.self).split(separator: "\n").map(String.init)
}

/// Decodes a JSON line with Foundation (independently of the module's own parser).
func object(_ line: String, sourceLocation: SourceLocation = #_sourceLocation) -> [String: Any] {
  guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
    Issue.record("not a JSON object: \(line)", sourceLocation: sourceLocation)
    return [:]
  }
  return o
}

func firstLine(_ path: String) -> String { lines(path).first ?? "" }
