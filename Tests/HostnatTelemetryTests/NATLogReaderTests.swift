import HostnatAddressing
import Foundation
import HostnatEngine
import HostnatTelemetry
import Testing

@Suite struct NATLogReaderTests {
  /// Two agents' files with interleaved timestamps, a skipped line, and a torn last line.
  static func makeLab(_ dir: TempDir) throws -> [String] {
    let ctx = VMLogContext(gateway: "gw", router: "r", region: "lab", network: "default", subnet: "s")
    let a = try NATLogWriter(path: dir.file("host-a.log"), host: "host-a")
    a.setContext(["vm-1": ctx])
    a.write(records: [
      (record(at: t0 + 1 * second, dst: "192.0.2.10"), "vm-1"),
      (record(at: t0 + 3 * second, dst: "198.51.100.7", nat: "0.0.0.0", natPort: 0, dropped: .outOfResources), "vm-1"),
      (record(at: t0 + 5 * second, dst: "192.0.2.10", proto: 17), "vm-1"),
    ], now: t0)
    let b = try NATLogWriter(path: dir.file("host-b.log"), host: "host-b")
    b.setContext(["vm-2": ctx])
    b.write(records: [
      (record(at: t0 + 2 * second, src: "10.0.1.2", dst: "192.0.2.10"), "vm-2"),
      (record(at: t0 + 4 * second, src: "10.0.1.2", dst: "203.0.113.9", nat: "0.0.0.0", natPort: 0, dropped: .endpointIndependenceConflict), "vm-2"),
    ], now: t0)
    a.flush()
    b.flush()
    let h = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.file("host-b.log")))
    try h.seekToEnd()
    try h.write(contentsOf: Data("{\"timestamp\":\"2024-05-01T12:00:06.000Z\",\"skipped\":4,\"reason\":\"rate limit\",\"from\":\"a\",\"to\":\"b\"}\nnot json\n{\"timestamp\":\"2024-05-01T12:0".utf8))
    try h.close()
    return [dir.file("host-a.log"), dir.file("host-b.log"), dir.file("host-c.log")]
  }

  struct Case: Sendable, CustomStringConvertible {
    var filter: String
    var limit: Int?
    var newestFirst: Bool
    /// Seconds after t0 of the expected lines, in order.
    var seconds: [Int]
    var description: String { "\(filter) limit \(limit.map(String.init) ?? "-") \(newestFirst ? "desc" : "asc")" }
  }

  static let cases: [Case] = [
    .init(filter: "", limit: nil, newestFirst: true, seconds: [6, 5, 4, 3, 2, 1]),
    .init(filter: "", limit: nil, newestFirst: false, seconds: [1, 2, 3, 4, 5, 6]),
    .init(filter: "", limit: 2, newestFirst: true, seconds: [6, 5]),
    .init(filter: "jsonPayload.allocation_status=DROPPED", limit: nil, newestFirst: false, seconds: [3, 4]),
    .init(filter: "jsonPayload.allocation_status!=OK", limit: nil, newestFirst: false, seconds: [3, 4, 6]),
    .init(filter: "jsonPayload.connection.dest_ip=192.0.2.10", limit: nil, newestFirst: false, seconds: [1, 2, 5]),
    .init(filter: "jsonPayload.connection.dest_ip=192.0.2.10 AND jsonPayload.endpoint.vm_name=vm-1", limit: nil, newestFirst: false, seconds: [1, 5]),
    .init(filter: "jsonPayload.endpoint.vm_name=\"vm-2\" AND jsonPayload.drop_reason:independence", limit: nil, newestFirst: false, seconds: [4]),
    .init(filter: "jsonPayload.connection.protocol=17", limit: nil, newestFirst: false, seconds: [5]),
    .init(filter: "jsonPayload.endpoint.host:HOST-B", limit: 1, newestFirst: true, seconds: [4]),
    .init(filter: "skipped>=1", limit: nil, newestFirst: false, seconds: [6]),
    .init(filter: "timestamp>=\"2024-05-01T12:00:03\" AND timestamp<2024-05-01T12:00:05", limit: nil, newestFirst: false, seconds: [3, 4]),
    .init(filter: "jsonPayload.connection.dest_port>100 AND jsonPayload.connection.dest_port<=443", limit: nil, newestFirst: false, seconds: [1, 2, 3, 4, 5]),
  ]

  @Test(arguments: cases)
  func filterSortAndLimit(c: Case) throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    let files = try Self.makeLab(dir)
    let r = try NATLogReader.read(files: files, filter: c.filter, limit: c.limit, newestFirst: c.newestFirst)
    let expected = c.seconds.map { RFC3339.format(nanoseconds: t0 + UInt64($0) * second) }
    #expect(r.lines.map(\.timestamp) == expected)
    #expect(r.malformed == 2)
    #expect(r.missingFiles == [dir.file("host-c.log")])
  }

  @Test(arguments: [
    ("jsonPayload.allocation_status", "missing operator"),
    ("jsonPayload.allocation_status=", "missing value"),
    ("jsonpayload.allocation_status=OK", "unknown field 'jsonpayload.allocation_status'"),
    ("jsonPayload.conection.dest_ip=1.2.3.4", "unknown field"),
    ("skipped=1 OR skipped=2", "OR is not supported"),
    ("skipped=1 and skipped=2", "write AND in capitals"),
    ("skipped=1 skipped=2", "expected AND"),
    ("skipped=1 AND", "expected a term after AND"),
    ("=OK", "expected a field name"),
    ("jsonPayload.endpoint.vm_name=\"vm-1", "unterminated"),
    ("skipped!1", "missing operator"),
  ])
  func badExpressionsNameTheProblem(expression: String, problem: String) {
    do {
      _ = try NATLogFilter(expression)
      Issue.record("accepted \(expression)")
    } catch {
      #expect(error.description.contains(problem), "\(error.description)")
    }
  }

  @Test func tableAndJSON() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    let files = try Self.makeLab(dir)
    let r = try NATLogReader.read(files: files, newestFirst: false)
    let rows = NATLogReader.tableRows(r.lines)
    #expect(rows[0] == ["2024-05-01T12:00:01.000Z", "10.0.0.2:34567", "192.0.2.10:443", "203.0.113.5:40001", "OK"])
    #expect(rows[2] == ["2024-05-01T12:00:03.000Z", "10.0.0.2:34567", "198.51.100.7:443", "-", "DROPPED OUT_OF_RESOURCES"])
    #expect(rows[5][4].hasPrefix("SKIPPED 4 (rate limit"))
    let table = NATLogReader.table(r.lines).split(separator: "\n")
    #expect(table.count == 7)
    #expect(table[0].hasPrefix("TIMESTAMP"))
    #expect(table.allSatisfy { $0.count <= 120 })
    let json = NATLogReader.json(r.lines).split(separator: "\n")
    #expect(json.count == 6)
    #expect(json.allSatisfy { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) != nil })
  }
}
