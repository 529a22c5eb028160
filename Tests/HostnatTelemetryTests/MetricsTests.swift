import HostnatAddressing
import Foundation
import HostnatDataplane
import HostnatEngine
import HostnatMetrics
import HostnatTelemetry
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite struct MetricsTests {
  /// The sample line for `name{labels}` in an exposition, or nil.
  static func sample(_ text: String, _ series: String) -> String? {
    text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.map { String($0.dropFirst(series.count + 1)) }
  }

  @Test func counterFollowsTotalsAndResets() {
    let r = TelemetryRegistry()
    let c = r.counter("hostnat_agent_sent_packets_total", labels: [("vm", "vm-1"), ("gateway", "gw")])
    #expect(c.set(40) == 40)
    #expect(c.set(42) == 2)
    #expect(r.counter("hostnat_agent_sent_packets_total", labels: [("vm", "vm-1"), ("gateway", "gw")]) === c)
    var text = r.render()
    #expect(Self.sample(text, #"hostnat_agent_sent_packets_total{vm="vm-1",gateway="gw"}"#) == "42")
    #expect(text.contains("# TYPE hostnat_agent_sent_packets_total counter"))
    #expect(text.contains("# HELP hostnat_agent_sent_packets_total Packets sent to the Internet after NAT."))
    // The data plane restarted: its total went down.
    #expect(c.set(5) == 0)
    text = r.render()
    #expect(Self.sample(text, #"hostnat_agent_sent_packets_total{vm="vm-1",gateway="gw"}"#) == "5")
    r.counter("hostnat_controller_admin_requests_total", labels: [("method", "CreateRouter"), ("result", "OK")]).increment()
    r.counter("hostnat_controller_admin_requests_total", labels: [("method", "CreateRouter"), ("result", "OK")]).increment(by: 2)
    r.gauge("hostnat_agent_controller_connected").set(true)
    r.histogram("hostnat_controller_push_to_ack_seconds").record(.milliseconds(3))
    text = r.render()
    #expect(Self.sample(text, #"hostnat_controller_admin_requests_total{method="CreateRouter",result="OK"}"#) == "3")
    #expect(Self.sample(text, "hostnat_agent_controller_connected") == "1.0" || Self.sample(text, "hostnat_agent_controller_connected") == "1")
    #expect(Self.sample(text, #"hostnat_controller_push_to_ack_seconds_bucket{le="0.005"}"#) == "1")
    #expect(Self.sample(text, #"hostnat_controller_push_to_ack_seconds_bucket{le="0.0025"}"#) == "0")
  }

  @Test func agentSnapshotSetsCountersAndDrops() throws {
    var vm = VMCounters()
    vm.packetsOut = 10
    vm.bytesOut = 1000
    vm.packetsIn = 8
    vm.bytesIn = 800
    vm.newFlows = 3
    vm.droppedOutOfResources = 2
    var g = GlobalCounters()
    g.filteredInbound = 7
    g.noNATConfigured = 1
    var loop = AgentLoopCounters()
    loop.notConfigured = 4
    // AgentDataplaneStats has no public memberwise init; it is Codable, so build it from JSON.
    let enc = JSONEncoder()
    func j(_ v: some Encodable) throws -> String { String(decoding: try enc.encode(v), as: UTF8.self) }
    let json = """
      {"appliedVersion":12,"flows":3,"mappings":2,"capacity":1024,"vms":{"vm-1":\(try j(VMStats(vm)))},
       "global":\(try j(GlobalStats(g))),"loop":\(try j(loop)),"vmAddresses":{}}
      """
    let stats = try JSONDecoder().decode(AgentDataplaneStats.self, from: Data(json.utf8))
    let r = TelemetryRegistry()
    r.update(agent: stats, gateways: ["vm-1": "gw"])
    var text = r.render()
    let vmLabels = #"vm="vm-1",gateway="gw""#
    #expect(Self.sample(text, "hostnat_agent_sent_packets_total{\(vmLabels)}") == "10")
    #expect(Self.sample(text, "hostnat_agent_received_bytes_total{\(vmLabels)}") == "800")
    #expect(Self.sample(text, "hostnat_agent_new_connections_total{\(vmLabels)}") == "3")
    #expect(Self.sample(text, "hostnat_agent_dropped_sent_packets_total{\(vmLabels),reason=\"OUT_OF_RESOURCES\"}") == "2")
    #expect(Self.sample(text, "hostnat_agent_dropped_sent_packets_total{\(vmLabels),reason=\"ENDPOINT_INDEPENDENCE_CONFLICT\"}") == "0")
    #expect(Self.sample(text, #"hostnat_agent_dropped_packets_total{reason="FILTERED_INBOUND"}"#) == "7")
    #expect(Self.sample(text, #"hostnat_agent_dropped_packets_total{reason="NOT_CONFIGURED"}"#) == "4")
    #expect(Self.sample(text, #"hostnat_agent_dropped_packets_total{reason="OUT_OF_RESOURCES"}"#) == "2")
    #expect(Self.sample(text, "hostnat_agent_config_version_applied").flatMap(Double.init) == 12)
    #expect(Self.sample(text, "hostnat_agent_nat_allocation_failed{\(vmLabels)}").flatMap(Double.init) == 1)
    // Same snapshot again: nothing new failed in this interval.
    r.update(agent: stats, gateways: ["vm-1": "gw"])
    text = r.render()
    #expect(Self.sample(text, "hostnat_agent_nat_allocation_failed{\(vmLabels)}").flatMap(Double.init) == 0)
    #expect(Self.sample(text, "hostnat_agent_sent_packets_total{\(vmLabels)}") == "10")

    var edge = EdgeDataplaneStats()
    edge.droppedUnowned = 9
    edge.perHost = ["127.0.0.1:4001": 5]
    r.update(edge: edge)
    text = r.render()
    #expect(Self.sample(text, "hostnat_edge_dropped_unowned_packets_total") == "9")
    #expect(Self.sample(text, #"hostnat_edge_routed_packets_total{host="127.0.0.1:4001"}"#) == "5")
  }

  @Test func nameListCoversTheIssue() {
    let list = MetricCatalog.renderNameList()
    for name in [
      "hostnat_agent_sent_packets_total", "hostnat_agent_received_bytes_total", "hostnat_agent_new_connections_total",
      "hostnat_agent_open_connections", "hostnat_agent_closed_connections_total", "hostnat_agent_allocated_ports",
      "hostnat_agent_ports_in_use", "hostnat_agent_port_usage", "hostnat_agent_dropped_sent_packets_total",
      "hostnat_agent_dropped_packets_total", "hostnat_agent_config_version_applied", "hostnat_agent_controller_connected",
      "hostnat_agent_seconds_since_last_config", "hostnat_controller_connected_hosts",
      "hostnat_controller_config_versions_pushed_total", "hostnat_controller_config_versions_acked_total",
      "hostnat_controller_config_versions_nacked_total", "hostnat_controller_push_to_ack_seconds",
      "hostnat_controller_admin_requests_total", "hostnat_edge_routed_packets_total", "hostnat_edge_dropped_unowned_packets_total",
    ] {
      #expect(list.contains("\n\(name) "), "\(name) missing")
    }
    let all = MetricCatalog.all
    #expect(Set(all.map(\.name)).count == all.count)
    for d in all {
      #expect(d.name.hasPrefix("hostnat_"))
      #expect((d.kind == .counter) == d.name.hasSuffix("_total"), "\(d.name)")
      #expect(!d.help.isEmpty)
    }
    #expect(MetricCatalog.dropReasons.contains("ENDPOINT_INDEPENDENCE_CONFLICT"))
    // Every catalogued metric registers and renders.
    let r = TelemetryRegistry()
    for d in all {
      let labels = d.labels.map { ($0, "x") }
      switch d.kind {
      case .counter: r.counter(d.name, labels: labels).set(1)
      case .gauge: r.gauge(d.name, labels: labels).set(1)
      case .histogram: r.histogram(d.name, labels: labels).record(1.0)
      }
    }
    let text = r.render()
    for d in all { #expect(text.contains("# TYPE \(d.name) \(d.kind.rawValue)")) }
  }
}

/// A blocking HTTP/1.1 exchange over a plain socket to 127.0.0.1, bounded by a 5 s receive timeout.
func httpExchange(port: Int, request: String) throws -> String {
  #if canImport(Glibc)
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  #else
  let fd = socket(AF_INET, SOCK_STREAM, 0)
  #endif
  guard fd >= 0 else { throw POSIXError(.EIO) }
  defer { close(fd) }
  var tv = timeval(tv_sec: 5, tv_usec: 0)
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
  var addr = sockaddr_in()
  addr.sin_family = sa_family_t(AF_INET)
  addr.sin_port = in_port_t(UInt16(port).bigEndian)
  addr.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
  let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
  guard rc == 0 else { throw POSIXError(.ECONNREFUSED) }
  let bytes = Array(request.utf8)
  var off = 0
  for _ in 0..<1000 where off < bytes.count {
    let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + off, $0.count - off, 0) }
    if n <= 0 { break }
    off += n
  }
  var out: [UInt8] = []
  var buf = [UInt8](repeating: 0, count: 65536)
  for _ in 0..<1000 {
    let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
    if n <= 0 { break }
    out += buf[0..<n]
  }
  return String(decoding: out, as: UTF8.self)
}

@Suite struct MetricsHTTPServerTests {
  @Test(.timeLimit(.minutes(1))) func servesMetricsHealthzAnd404() async throws {
    let registry = TelemetryRegistry()
    registry.counter("hostnat_edge_dropped_unowned_packets_total").set(17)
    let scrapes = ScrapeCount()
    let server = MetricsHTTPServer(registry: registry, maxBodyBytes: 1024, onScrape: { scrapes.bump() })
    let port = try await server.start(host: "127.0.0.1", port: 0)
    #expect(port > 0)
    do {
      let metrics = try httpExchange(port: port, request: "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
      #expect(metrics.hasPrefix("HTTP/1.1 200 OK"))
      #expect(metrics.contains("Content-Type: text/plain; version=0.0.4"))
      #expect(metrics.contains("\nhostnat_edge_dropped_unowned_packets_total 17\n"))
      #expect(scrapes.value == 1)

      let health = try httpExchange(port: port, request: "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      #expect(health.hasPrefix("HTTP/1.1 200 OK"))
      #expect(health.hasSuffix("\r\n\r\nok\n"))

      let missing = try httpExchange(port: port, request: "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      #expect(missing.hasPrefix("HTTP/1.1 404"))

      let post = try httpExchange(port: port, request: "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
      #expect(post.hasPrefix("HTTP/1.1 405"))

      let body = String(repeating: "a", count: 4000)
      let big = try httpExchange(port: port, request: "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.count)\r\n\r\n\(body)")
      #expect(big.hasPrefix("HTTP/1.1 413"))

      // Two requests on one keep-alive connection.
      let twice = try httpExchange(port: port, request: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      #expect(twice.components(separatedBy: "HTTP/1.1 200 OK").count == 3)
    } catch {
      Issue.record("exchange failed: \(error)")
    }
    await server.shutdown()
    // The freed port may already belong to another test's server, so "connection refused" cannot
    // be required; what must hold is that this server serves nothing more.
    let scrapedBefore = scrapes.value
    _ = try? httpExchange(port: port, request: "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    #expect(scrapes.value == scrapedBefore, "the server answered a scrape after shutdown")
  }
}

final class ScrapeCount: @unchecked Sendable {
  let lock = NSLock()
  var n = 0
  func bump() { lock.withLock { n += 1 } }
  var value: Int { lock.withLock { n } }
}
