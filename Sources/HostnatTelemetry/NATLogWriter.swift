import HostnatAddressing
public import HostnatDataplane
public import HostnatEngine
internal import HostnatPackets
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// What a log entry says about the VM beyond its id: the gateway that serves it and where it sits.
/// The agent fills it from the pushed config.
public struct VMLogContext: Sendable, Hashable {
  public var gateway: String
  public var router: String
  public var region: String
  public var network: String
  public var subnet: String
  public init(gateway: String, router: String, region: String, network: String, subnet: String) {
    self.gateway = gateway
    self.router = router
    self.region = region
    self.network = network
    self.subnet = subnet
  }
}

extension DropReason {
  /// The drop reason as Cloud NAT names it in logs and metric labels (Cloud NAT's own names for
  /// OUT_OF_RESOURCES and ENDPOINT_INDEPENDENCE_CONFLICT; the rest in the same style).
  public var cloudNATName: String {
    switch self {
    case .malformed: "MALFORMED"
    case .unsupportedProtocol: "UNSUPPORTED_PROTOCOL"
    case .fragment: "FRAGMENT"
    case .noNATConfigured: "NO_NAT_CONFIGURED"
    case .filteredInbound: "FILTERED_INBOUND"
    case .endpointIndependenceConflict: "ENDPOINT_INDEPENDENCE_CONFLICT"
    case .outOfResources: "OUT_OF_RESOURCES"
    case .flowTableFull: "FLOW_TABLE_FULL"
    case .unmatchedICMPError: "UNMATCHED_ICMP_ERROR"
    case .firewallDenied: "FIREWALL_DENIED"
    case .routedToNextHop: "ROUTED_TO_NEXT_HOP"
    }
  }
}

/// Errors of the NAT log writer, with the path and errno text.
public struct NATLogError: Error, Sendable, Hashable, CustomStringConvertible {
  public var description: String
  init(_ what: String, path: String, errno e: Int32) {
    description = "\(what) \(path): \(String(cString: strerror(e)))"
  }
}

/// Appends NAT log entries as JSON lines shaped like Cloud NAT's, at a bounded rate and size.
///
/// - Rate: a token bucket of `maxEntriesPerSecond` (burst of the same size). Entries beyond it are
///   counted, not written; as soon as a token is free again one line
///   `{"timestamp":…,"skipped":N,"reason":"rate limit","from":…,"to":…}` says how many were skipped
///   between which entry timestamps (that line takes a token too, so the bound holds). Unlike Cloud
///   NAT's sampled logs, the absence of an entry therefore means something.
/// - Size: when a line would take the file past `maxFileBytes`, the file is renamed to `PATH.1`
///   (replacing the previous one) and a new file started, so at most about 2 × maxFileBytes are used.
///
/// Every `write` ends with one `write(2)` of its batch. Thread-safe (one lock).
public final class NATLogWriter: Sendable {
  public let path: String
  public let host: String
  public let maxEntriesPerSecond: Int
  public let maxFileBytes: Int

  struct State {
    var fd: Int32 = -1
    var fileBytes = 0
    var buffer: [UInt8] = []
    var context: [String: VMLogContext] = [:]
    var tokens: Double
    var lastRefill: UInt64?
    var skipped: UInt64 = 0
    var skippedFrom: UInt64 = 0
    var skippedTo: UInt64 = 0
    var written: UInt64 = 0
    var totalSkipped: UInt64 = 0
    var rotations: Int = 0
  }

  let state: Mutex<State>

  /// Opens (creating, appending) `path`.
  public init(path: String, host: String, maxEntriesPerSecond: Int = 200, maxFileBytes: Int = 64 << 20) throws(NATLogError) {
    precondition(maxEntriesPerSecond > 0 && maxFileBytes > 0, "NATLogWriter limits must be positive")
    self.path = path
    self.host = host
    self.maxEntriesPerSecond = maxEntriesPerSecond
    self.maxFileBytes = maxFileBytes
    var st = State(tokens: Double(maxEntriesPerSecond))
    st.fd = try Self.open(path)
    var sb = stat()
    if fstat(st.fd, &sb) == 0 { st.fileBytes = Int(sb.st_size) }
    state = Mutex(st)
  }

  deinit {
    state.withLock { st in
      Self.drain(&st, path: path)
      if st.fd >= 0 { _ = sysClose(st.fd) }
      st.fd = -1
    }
  }

  static func open(_ path: String) throws(NATLogError) -> Int32 {
    let fd = path.withCString { sysOpen($0, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644) }
    guard fd >= 0 else { throw NATLogError("cannot open", path: path, errno: errno) }
    return fd
  }

  /// Replaces the per-VM context (gateway, router, region, network, subnet) by VM id.
  public func setContext(_ context: [String: VMLogContext]) {
    state.withLock { $0.context = context }
  }

  /// Entries written, entries skipped by the rate limit, and rotations since init.
  public var counts: (written: UInt64, skipped: UInt64, rotations: Int) {
    state.withLock { ($0.written, $0.totalSkipped, $0.rotations) }
  }

  /// Writes the data plane's drained entries. `now` is the wall clock (Unix ns) driving the rate
  /// limit; call it with an empty array now and then so a pending "skipped" line gets out even
  /// when no new entries come.
  public func write(_ entries: [AgentLogEntry], now: UInt64) {
    write(records: entries.map { (record: $0.record, vmID: $0.vmID) }, now: now)
  }

  /// Same as `write(_:now:)` for engine records whose VM id is already resolved.
  public func write(records: [(record: LogRecord, vmID: String?)], now: UInt64) {
    state.withLock { st in
      refill(&st, now: now)
      if st.skipped > 0, st.tokens >= 1 { emitSkipped(&st, now: now) }
      for (record, vmID) in records {
        guard st.tokens >= 1 else {
          if st.skipped == 0 { st.skippedFrom = record.timestamp }
          st.skipped += 1
          st.totalSkipped += 1
          st.skippedTo = record.timestamp
          continue
        }
        st.tokens -= 1
        var line: [UInt8] = []
        line.reserveCapacity(512)
        encode(record, vmID: vmID, context: vmID.flatMap { st.context[$0] }, into: &line)
        append(line, to: &st)
        st.written += 1
      }
      Self.drain(&st, path: path)
    }
  }

  /// Writes out anything buffered (every `write` already does).
  public func flush() {
    state.withLock { Self.drain(&$0, path: path) }
  }

  /// Writes the pending "skipped" line regardless of the rate (on shutdown), then flushes.
  public func close(now: UInt64) {
    state.withLock { st in
      if st.skipped > 0 { emitSkipped(&st, now: now) }
      Self.drain(&st, path: path)
    }
  }

  func refill(_ st: inout State, now: UInt64) {
    let cap = Double(maxEntriesPerSecond)
    if let last = st.lastRefill, now > last {
      st.tokens = min(cap, st.tokens + Double(now - last) * cap / 1e9)
    }
    if st.lastRefill == nil || now > st.lastRefill! { st.lastRefill = now }
  }

  func emitSkipped(_ st: inout State, now: UInt64) {
    var line: [UInt8] = []
    line.append(contentsOf: Array("{".utf8))
    JSONText.appendKey("timestamp", to: &line)
    JSONText.appendString(RFC3339.format(nanoseconds: now), to: &line)
    line.append(contentsOf: Array(",\"skipped\":\(st.skipped),\"reason\":\"rate limit\",".utf8))
    JSONText.appendKey("from", to: &line)
    JSONText.appendString(RFC3339.format(nanoseconds: st.skippedFrom), to: &line)
    line.append(UInt8(ascii: ","))
    JSONText.appendKey("to", to: &line)
    JSONText.appendString(RFC3339.format(nanoseconds: st.skippedTo), to: &line)
    line.append(contentsOf: Array("}\n".utf8))
    st.tokens = max(0, st.tokens - 1)
    st.skipped = 0
    append(line, to: &st)
  }

  func append(_ line: [UInt8], to st: inout State) {
    if st.fileBytes + st.buffer.count + line.count > maxFileBytes, st.fileBytes + st.buffer.count > 0 {
      Self.drain(&st, path: path)
      rotate(&st)
    }
    st.buffer.append(contentsOf: line)
  }

  func rotate(_ st: inout State) {
    if st.fd >= 0 { _ = sysClose(st.fd) }
    _ = rename(path, path + ".1")
    st.fd = (try? Self.open(path)) ?? -1
    st.fileBytes = 0
    st.rotations += 1
  }

  /// Writes the buffer to the file; on error the bytes are dropped (a log must not stop the agent).
  static func drain(_ st: inout State, path: String) {
    guard !st.buffer.isEmpty else { return }
    defer { st.buffer.removeAll(keepingCapacity: true) }
    guard st.fd >= 0 else { return }
    var off = 0
    var attempts = 0
    while off < st.buffer.count, attempts < 64 {
      attempts += 1
      let n = st.buffer.withUnsafeBytes { raw in sysWrite(st.fd, raw.baseAddress! + off, raw.count - off) }
      if n > 0 {
        off += n
      } else if n < 0, errno == EINTR {
        continue
      } else {
        break
      }
    }
    st.fileBytes += off
  }

  /// One Cloud NAT-style entry.
  func encode(_ r: LogRecord, vmID: String?, context: VMLogContext?, into out: inout [UInt8]) {
    func field(_ key: String, _ value: String, comma: Bool = true) {
      if comma { out.append(UInt8(ascii: ",")) }
      JSONText.appendKey(key, to: &out)
      JSONText.appendString(value, to: &out)
    }
    func number(_ key: String, _ value: some BinaryInteger) {
      out.append(UInt8(ascii: ","))
      JSONText.appendKey(key, to: &out)
      out.append(contentsOf: Array(String(value).utf8))
    }
    out.append(UInt8(ascii: "{"))
    field("timestamp", RFC3339.format(nanoseconds: r.timestamp), comma: false)
    out.append(contentsOf: Array(",\"jsonPayload\":{\"connection\":{".utf8))
    field("src_ip", r.insideIP.description, comma: false)
    number("src_port", r.insidePort)
    field("dest_ip", r.remoteIP.description)
    number("dest_port", r.remotePort)
    number("protocol", r.protocolNumber)
    // A drop before allocation has no NAT IP:port (Cloud NAT leaves them out too).
    if !(r.status == .dropped && r.natIP.value == 0) {
      field("nat_ip", r.natIP.description)
      number("nat_port", r.natPort)
    }
    out.append(UInt8(ascii: "}"))
    field("allocation_status", r.status == .ok ? "OK" : "DROPPED")
    if r.status == .dropped, let reason = r.reason { field("drop_reason", reason.cloudNATName) }
    if let context {
      out.append(contentsOf: Array(",\"gateway_identifiers\":{".utf8))
      field("gateway_name", context.gateway, comma: false)
      field("router_name", context.router)
      field("region", context.region)
      out.append(UInt8(ascii: "}"))
    }
    if let vmID {
      out.append(contentsOf: Array(",\"endpoint\":{".utf8))
      field("vm_name", vmID, comma: false)
      field("host", host)
      out.append(UInt8(ascii: "}"))
      if let context {
        out.append(contentsOf: Array(",\"vpc\":{".utf8))
        field("vpc_name", context.network, comma: false)
        field("subnetwork_name", context.subnet)
        out.append(UInt8(ascii: "}"))
      }
    }
    out.append(contentsOf: Array("}}\n".utf8))
  }
}

// The libc names without the module prefix clash with methods of this file (open/close/write).
@inline(__always) func sysOpen(_ p: UnsafePointer<CChar>, _ flags: Int32, _ mode: mode_t) -> Int32 { open(p, flags, mode) }
@inline(__always) func sysClose(_ fd: Int32) -> Int32 { close(fd) }
@inline(__always) func sysWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }
