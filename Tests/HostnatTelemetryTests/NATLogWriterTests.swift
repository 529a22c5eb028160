import HostnatAddressing
import Foundation
import HostnatDataplane
import HostnatEngine
import HostnatPackets
import HostnatTelemetry
import HostnatTestSupport
import Testing

@Suite struct NATLogWriterTests {
  let context = VMLogContext(gateway: "nat-gw", router: "router-1", region: "lab-central1", network: "default", subnet: "subnet-a")

  @Test func translationEntryHasCloudNATShape() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    let w = try NATLogWriter(path: dir.file("nat.log"), host: "host-1")
    w.setContext(["vm-1": context])
    w.write(records: [(record(at: t0 + 123_456_789, proto: 17), "vm-1")], now: t0)
    let ls = lines(dir.file("nat.log"))
    try #require(ls.count == 1)
    let o = object(ls[0])
    #expect(Set(o.keys) == ["timestamp", "jsonPayload"])
    #expect(o["timestamp"] as? String == "2024-05-01T12:00:00.123Z")
    let p = try #require(o["jsonPayload"] as? [String: Any])
    #expect(Set(p.keys) == ["connection", "allocation_status", "gateway_identifiers", "endpoint", "vpc"])
    let c = try #require(p["connection"] as? [String: Any])
    #expect(c["src_ip"] as? String == "10.0.0.2")
    #expect(c["src_port"] as? Int == 34567)
    #expect(c["dest_ip"] as? String == "192.0.2.10")
    #expect(c["dest_port"] as? Int == 443)
    #expect(c["protocol"] as? Int == 17)
    #expect(c["nat_ip"] as? String == "203.0.113.5")
    #expect(c["nat_port"] as? Int == 40001)
    #expect(p["allocation_status"] as? String == "OK")
    #expect(p["drop_reason"] == nil)
    #expect(p["gateway_identifiers"] as? [String: String] == ["gateway_name": "nat-gw", "router_name": "router-1", "region": "lab-central1"])
    #expect(p["endpoint"] as? [String: String] == ["vm_name": "vm-1", "host": "host-1"])
    #expect(p["vpc"] as? [String: String] == ["vpc_name": "default", "subnetwork_name": "subnet-a"])
  }

  static let reasons: [(DropReason, String)] = [
    (.outOfResources, "OUT_OF_RESOURCES"), (.endpointIndependenceConflict, "ENDPOINT_INDEPENDENCE_CONFLICT"),
    (.flowTableFull, "FLOW_TABLE_FULL"), (.noNATConfigured, "NO_NAT_CONFIGURED"), (.filteredInbound, "FILTERED_INBOUND"),
    (.malformed, "MALFORMED"), (.unsupportedProtocol, "UNSUPPORTED_PROTOCOL"), (.fragment, "FRAGMENT"),
    (.unmatchedICMPError, "UNMATCHED_ICMP_ERROR"),
  ]

  @Test(arguments: reasons)
  func dropEntryNamesTheReason(reason: DropReason, name: String) throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    let w = try NATLogWriter(path: dir.file("nat.log"), host: "host-1")
    w.setContext(["vm-1": context])
    w.write(records: [(record(at: t0, nat: "0.0.0.0", natPort: 0, dropped: reason), "vm-1")], now: t0)
    let p = try #require(object(firstLine(dir.file("nat.log")))["jsonPayload"] as? [String: Any])
    #expect(p["allocation_status"] as? String == "DROPPED")
    #expect(p["drop_reason"] as? String == name)
    let c = try #require(p["connection"] as? [String: Any])
    // No NAT IP:port was allocated, so none is claimed.
    #expect(c["nat_ip"] == nil && c["nat_port"] == nil)
    #expect(c["protocol"] as? Int == 6)
  }

  @Test func writesDrainedAgentEntries() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    let w = try NATLogWriter(path: dir.file("nat.log"), host: "host-1")
    w.setContext(["vm-1": context])
    w.write([AgentLogEntry(record: record(at: t0), vmID: "vm-1"), AgentLogEntry(record: record(at: t0 + 1, dropped: .filteredInbound), vmID: nil)], now: t0)
    let ls = lines(dir.file("nat.log"))
    try #require(ls.count == 2)
    #expect((object(ls[0])["jsonPayload"] as? [String: Any])?["endpoint"] as? [String: String] == ["vm_name": "vm-1", "host": "host-1"])
    #expect((object(ls[1])["jsonPayload"] as? [String: Any])?["endpoint"] == nil)
    // A dropped entry that did carry a NAT IP keeps it.
    #expect(((object(ls[1])["jsonPayload"] as? [String: Any])?["connection"] as? [String: Any])?["nat_ip"] as? String == "203.0.113.5")
  }

  @Test func unattributedDropHasNoEndpointOrVPC() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    let w = try NATLogWriter(path: dir.file("nat.log"), host: "host-1")
    w.setContext(["vm-1": context])
    w.write(records: [(record(at: t0, src: "10.9.9.9", nat: "0.0.0.0", natPort: 0, dropped: .noNATConfigured), nil)], now: t0)
    let p = try #require(object(firstLine(dir.file("nat.log")))["jsonPayload"] as? [String: Any])
    #expect(Set(p.keys) == ["connection", "allocation_status", "drop_reason"])
    #expect(p["drop_reason"] as? String == "NO_NAT_CONFIGURED")
  }

  @Test func namesAreEscaped() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    let w = try NATLogWriter(path: dir.file("nat.log"), host: "host \"q\"\n")
    w.write(records: [(record(at: t0), "vm\\1")], now: t0)
    let p = try #require(object(firstLine(dir.file("nat.log")))["jsonPayload"] as? [String: Any])
    #expect(p["endpoint"] as? [String: String] == ["vm_name": "vm\\1", "host": "host \"q\"\n"])
  }

  /// The engine applies the gateway's filter; what it produces comes out of the writer as OK/DROPPED.
  @Test(arguments: [(LogFilter.all, 1, 1), (.errorsOnly, 0, 1), (.translationsOnly, 1, 0)])
  func engineFilterAsWritten(filter: LogFilter, ok: Int, dropped: Int) throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    let vmIP = ip("10.0.0.2")
    let natIP = ip("203.0.113.5")
    let vm = VMConfig(
      id: "vm-1", primaryIP: vmIP, natSourceRanges: [IPv4CIDR(vmIP, prefixLength: 32)!],
      portBlocks: [PortBlock(natIP: natIP, ports: 40000..<40001)],
      gateway: GatewaySettings(name: "nat-gw", logging: LoggingConfig(enabled: true, filter: filter)))
    let engine = try NATEngine(capacity: 16, config: EngineConfig(vms: [vm]))
    let ring = LogRing(capacity: 8)
    engine.logSink = ring
    for (sport, now) in [(UInt16(1000), t0), (1001, t0 + 1)] {  // one port only: the second is OUT_OF_RESOURCES
      var p = PacketBuilder.tcp(source: vmIP, destination: ip("192.0.2.10"), sourcePort: sport, destinationPort: 80, flags: .syn)
      _ = p.withUnsafeMutableBytes { engine.translateOutbound($0, now: now) }
    }
    let records = ring.drain().map { (record: $0, vmID: $0.vmIndex.flatMap { engine.vmID(at: Int($0)) }) }
    let w = try NATLogWriter(path: dir.file("nat.log"), host: "host-1")
    w.setContext(["vm-1": context])
    w.write(records: records, now: t0)
    let read = try NATLogReader.read(files: [dir.file("nat.log")], newestFirst: false)
    let statuses = read.lines.map { $0.value[path: "jsonPayload.allocation_status"]?.text }
    #expect(statuses.filter { $0 == "OK" }.count == ok)
    #expect(statuses.filter { $0 == "DROPPED" }.count == dropped)
    for l in read.lines {
      #expect(l.value[path: "jsonPayload.endpoint.vm_name"]?.text == "vm-1")
      if l.value[path: "jsonPayload.allocation_status"]?.text == "OK" {
        #expect(l.value[path: "jsonPayload.connection.nat_ip"]?.text == "203.0.113.5")
        #expect(l.value[path: "jsonPayload.connection.nat_port"]?.text == "40000")
        #expect(l.value[path: "jsonPayload.connection.src_port"]?.text == "1000")
      } else {
        #expect(l.value[path: "jsonPayload.drop_reason"]?.text == "OUT_OF_RESOURCES")
        #expect(l.value[path: "jsonPayload.connection.src_port"]?.text == "1001")
      }
    }
  }

  @Test func rateLimitWritesTheSkippedLine() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    let path = dir.file("nat.log")
    let w = try NATLogWriter(path: path, host: "h", maxEntriesPerSecond: 5)
    let burst = (0..<12).map { (record: record(at: t0 + UInt64($0) * 1_000_000, sport: UInt16(1000 + $0)), vmID: String?.none) }
    w.write(records: burst, now: t0)
    #expect(lines(path).count == 5)
    // 0.1 s later only half a token has come back: nothing more yet.
    w.write(records: [], now: t0 + second / 10)
    #expect(lines(path).count == 5)
    // 0.5 s later there are 2.5 tokens: the skipped line, then one more entry; the third is skipped.
    let later = (0..<3).map { (record: record(at: t0 + second / 2 + UInt64($0), sport: UInt16(2000 + $0)), vmID: String?.none) }
    w.write(records: later, now: t0 + second / 2)
    let ls = lines(path)
    try #require(ls.count == 7)
    let skip = object(ls[5])
    #expect(skip["skipped"] as? Int == 7)
    #expect(skip["reason"] as? String == "rate limit")
    #expect(skip["from"] as? String == "2024-05-01T12:00:00.005Z")
    #expect(skip["to"] as? String == "2024-05-01T12:00:00.011Z")
    #expect(skip["timestamp"] as? String == "2024-05-01T12:00:00.500Z")
    #expect((object(ls[6])["jsonPayload"] as? [String: Any]).flatMap { ($0["connection"] as? [String: Any])?["src_port"] as? Int } == 2000)
    #expect(w.counts.written == 6 && w.counts.skipped == 9)
    // On close the pending count (2) is written even without a token.
    w.close(now: t0 + second / 2)
    let last = object(lines(path).last ?? "")
    #expect(last["skipped"] as? Int == 2)
  }

  @Test func rotatesOnceKeepingOneOldFile() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    let path = dir.file("nat.log")
    let w = try NATLogWriter(path: path, host: "h", maxEntriesPerSecond: 10_000, maxFileBytes: 2000)
    func batch(_ n: Int, from: Int) -> [(record: LogRecord, vmID: String?)] {
      (0..<n).map { (record: record(at: t0 + UInt64(from + $0), sport: UInt16(10_000 + from + $0)), vmID: "vm-1") }
    }
    w.write(records: batch(1, from: 0), now: t0)
    let one = try #require(FileManager.default.contents(atPath: path)?.count)
    let perFile = 2000 / one
    w.write(records: batch(perFile + 2, from: 1), now: t0)
    #expect(FileManager.default.fileExists(atPath: path + ".1"))
    #expect(lines(path + ".1").count == perFile)
    #expect(lines(path).count == 3)
    #expect(w.counts.rotations == 1)
    // A second rotation replaces the old file: only two files, the oldest entries gone.
    w.write(records: batch(perFile, from: 1000), now: t0)
    #expect(w.counts.rotations == 2)
    let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
    #expect(files == ["nat.log", "nat.log.1"])
    for f in [path, path + ".1"] {
      #expect((FileManager.default.contents(atPath: f)?.count ?? .max) <= 2000)
    }
    // The old file now starts where the current one started after the first rotation.
    let firstOld = try NATLogReader.read(files: [path + ".1"], newestFirst: false, includeRotated: false).lines.first
    #expect(firstOld?.value[path: "jsonPayload.connection.src_port"]?.text == String(10_000 + perFile))
    #expect(lines(path).count == 3)
  }

  @Test(arguments: [
    (UInt64(0), "1970-01-01T00:00:00.000Z"), (t0 + 999_999_999, "2024-05-01T12:00:00.999Z"),
    (951_782_400 * second, "2000-02-29T00:00:00.000Z"), (4_102_444_799 * second + 1_000_000, "2099-12-31T23:59:59.001Z"),
  ])
  func rfc3339(ns: UInt64, text: String) {
    #expect(RFC3339.format(nanoseconds: ns) == text)
  }
}
