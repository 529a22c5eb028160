public import HostnatAddressing
import HostnatPackets

/// One stream of traffic a VM generates. Build with the static constructors (`.udpEcho(...)` etc.).
public struct FlowSpec: Sendable, Hashable, Codable {
  /// The kinds of flows; each names the emulated service it talks to.
  public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
    case udpEcho, tcpEcho, tcpChurn, ping, whoami, stun, filteringProbe
  }

  public var kind: Kind
  public var server: IPv4Address
  /// UDP/TCP source port; the ICMP echo identifier for `ping`; unused (0) for `tcpChurn`, whose
  /// ports come from the ephemeral range.
  public var sourcePort: UInt16
  public var ratePerSecond: Double
  /// Datagram payload size for `udpEcho`, bytes per write for `tcpEcho` and `tcpChurn`.
  public var payloadBytes: Int

  public init(kind: Kind, server: IPv4Address, sourcePort: UInt16, ratePerSecond: Double, payloadBytes: Int = 64) {
    self.kind = kind
    self.server = server
    self.sourcePort = sourcePort
    self.ratePerSecond = ratePerSecond
    self.payloadBytes = payloadBytes
  }

  public static func udpEcho(server: IPv4Address, srcPort: UInt16, ratePerSec: Double, payloadBytes: Int = 64) -> FlowSpec {
    FlowSpec(kind: .udpEcho, server: server, sourcePort: srcPort, ratePerSecond: ratePerSec, payloadBytes: payloadBytes)
  }
  public static func tcpEcho(server: IPv4Address, srcPort: UInt16, ratePerSec: Double, payloadBytes: Int = 64) -> FlowSpec {
    FlowSpec(kind: .tcpEcho, server: server, sourcePort: srcPort, ratePerSecond: ratePerSec, payloadBytes: payloadBytes)
  }
  public static func tcpChurn(server: IPv4Address, ratePerSec: Double, payloadBytes: Int = 32) -> FlowSpec {
    FlowSpec(kind: .tcpChurn, server: server, sourcePort: 0, ratePerSecond: ratePerSec, payloadBytes: payloadBytes)
  }
  /// `identifier` is the ICMP echo identifier (the "port" a NAT maps for ICMP).
  public static func ping(server: IPv4Address, identifier: UInt16 = 0x686E, ratePerSec: Double) -> FlowSpec {
    FlowSpec(kind: .ping, server: server, sourcePort: identifier, ratePerSecond: ratePerSec, payloadBytes: 32)
  }
  public static func whoami(server: IPv4Address, srcPort: UInt16, ratePerSec: Double) -> FlowSpec {
    FlowSpec(kind: .whoami, server: server, sourcePort: srcPort, ratePerSecond: ratePerSec, payloadBytes: 0)
  }
  public static func stun(server: IPv4Address, srcPort: UInt16, ratePerSec: Double) -> FlowSpec {
    FlowSpec(kind: .stun, server: server, sourcePort: srcPort, ratePerSecond: ratePerSec, payloadBytes: 20)
  }
  public static func filteringProbe(server: IPv4Address, srcPort: UInt16, ratePerSec: Double) -> FlowSpec {
    FlowSpec(kind: .filteringProbe, server: server, sourcePort: srcPort, ratePerSecond: ratePerSec, payloadBytes: 0)
  }

  /// The service port on the server.
  public var serverPort: UInt16 {
    switch kind {
    case .udpEcho, .tcpEcho, .tcpChurn: 7
    case .ping: 0
    case .whoami: 80
    case .stun: 3478
    case .filteringProbe: 9999
    }
  }

  /// Stable, human-readable identity, e.g. "udp-echo 203.0.113.10:7 from :40000".
  public var id: String {
    switch kind {
    case .udpEcho: "udp-echo \(server):7 from :\(sourcePort)"
    case .tcpEcho: "tcp-echo \(server):7 from :\(sourcePort)"
    case .tcpChurn: "tcp-churn \(server):7"
    case .ping: "ping \(server) id \(sourcePort)"
    case .whoami: "whoami \(server):80 from :\(sourcePort)"
    case .stun: "stun \(server):3478 from :\(sourcePort)"
    case .filteringProbe: "filtering-probe \(server):9999 from :\(sourcePort)"
    }
  }

  private enum CodingKeys: String, CodingKey { case kind, server, sourcePort, ratePerSecond, payloadBytes }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    kind = try c.decode(Kind.self, forKey: .kind)
    let text = try c.decode(String.self, forKey: .server)
    guard let address = IPv4Address(text) else {
      throw DecodingError.dataCorruptedError(
        forKey: .server, in: c, debugDescription: "flow server '\(text)' is not a dotted-quad IPv4 address")
    }
    server = address
    sourcePort = try c.decodeIfPresent(UInt16.self, forKey: .sourcePort) ?? 0
    ratePerSecond = try c.decode(Double.self, forKey: .ratePerSecond)
    payloadBytes = try c.decodeIfPresent(Int.self, forKey: .payloadBytes) ?? 64
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(kind, forKey: .kind)
    try c.encode(server.description, forKey: .server)
    try c.encode(sourcePort, forKey: .sourcePort)
    try c.encode(ratePerSecond, forKey: .ratePerSecond)
    try c.encode(payloadBytes, forKey: .payloadBytes)
  }
}

/// A VM's whole traffic mix and the timeouts that judge it. Durations are nanoseconds.
public struct WorkloadSpec: Sendable, Codable, Hashable {
  public var flows: [FlowSpec]
  /// A datagram (or ping, STUN, whoami, probe) without a reply after this long counts as lost.
  public var lossTimeout: UInt64 = 1_000_000_000
  /// The long-lived TCP connection is broken after this long without progress while data is outstanding.
  public var brokenAfter: UInt64 = 5_000_000_000
  /// A churn connection that has not completed (handshake, echo, close) by then has failed.
  public var churnTimeout: UInt64 = 3_000_000_000
  /// At most this many sends per flow per tick, so a stalled loop does not flood on resume.
  public var maxBurstPerTick: Int = 8
  /// Source ports `tcpChurn` cycles through.
  public var ephemeralPortLow: UInt16 = 49_152
  public var ephemeralPortHigh: UInt16 = 65_535

  public init(flows: [FlowSpec]) { self.flows = flows }

  /// The standard lab mix for one VM: one flow of each kind at modest rates. Source ports start at
  /// `basePort`; the whoami and STUN flows deliberately share one port towards two different servers
  /// so their reports show whether the NAT mapping is endpoint-independent.
  public static func labDefault(
    primary: IPv4Address = IPv4Address(203, 0, 113, 10), secondary: IPv4Address = IPv4Address(203, 0, 113, 20),
    natServer: IPv4Address = IPv4Address(203, 0, 113, 30), basePort: UInt16 = 40_000
  ) -> WorkloadSpec {
    WorkloadSpec(flows: [
      .udpEcho(server: primary, srcPort: basePort, ratePerSec: 20, payloadBytes: 64),
      .tcpEcho(server: primary, srcPort: basePort + 1, ratePerSec: 10),
      .tcpChurn(server: secondary, ratePerSec: 5),
      .ping(server: primary, identifier: basePort + 2, ratePerSec: 5),
      .whoami(server: secondary, srcPort: basePort + 3, ratePerSec: 2),
      .stun(server: natServer, srcPort: basePort + 3, ratePerSec: 2),
      .filteringProbe(server: natServer, srcPort: basePort + 4, ratePerSec: 1),
    ])
  }

  private enum CodingKeys: String, CodingKey {
    case flows, lossTimeout, brokenAfter, churnTimeout, maxBurstPerTick, ephemeralPortLow, ephemeralPortHigh
  }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    flows = try c.decode([FlowSpec].self, forKey: .flows)
    let d = WorkloadSpec(flows: [])
    lossTimeout = try c.decodeIfPresent(UInt64.self, forKey: .lossTimeout) ?? d.lossTimeout
    brokenAfter = try c.decodeIfPresent(UInt64.self, forKey: .brokenAfter) ?? d.brokenAfter
    churnTimeout = try c.decodeIfPresent(UInt64.self, forKey: .churnTimeout) ?? d.churnTimeout
    maxBurstPerTick = try c.decodeIfPresent(Int.self, forKey: .maxBurstPerTick) ?? d.maxBurstPerTick
    ephemeralPortLow = try c.decodeIfPresent(UInt16.self, forKey: .ephemeralPortLow) ?? d.ephemeralPortLow
    ephemeralPortHigh = try c.decodeIfPresent(UInt16.self, forKey: .ephemeralPortHigh) ?? d.ephemeralPortHigh
    guard ephemeralPortLow <= ephemeralPortHigh else {
      throw DecodingError.dataCorruptedError(
        forKey: .ephemeralPortHigh, in: c, debugDescription: "ephemeral port range is empty")
    }
  }
}

/// Counters for one flow. For datagram flows sent/received/lost count requests and replies; for
/// `tcpEcho` they count writes and fully echoed writes; for `tcpChurn` attempted/succeeded/failed
/// connections (the details are in `tcp` / `churn`).
public struct FlowReport: Sendable, Codable, Hashable {
  public var id: String
  public var kind: FlowSpec.Kind
  public var sent = 0
  public var received = 0
  /// No reply within the loss timeout (includes those that later arrived late).
  public var lost = 0
  /// Replies that arrived after their request had been counted lost.
  public var late = 0
  public var duplicate = 0
  /// Replies whose content was wrong (payload mismatch, unparsable answer).
  public var corrupt = 0
  public var inFlight = 0
  /// ICMP errors received that quote this flow's packets.
  public var icmpErrors = 0
  public var rttMaxMicros = 0
  public var rttAvgMicros = 0
  /// "IP:PORT" mappings the server reported (whoami, STUN), sorted; and the most recent one.
  public var mappings: [String] = []
  public var latestMapping: String? = nil
  /// Filtering probe: datagrams from endpoints this flow never sent to.
  public var unsolicited = 0
  public var unsolicitedFrom: [String] = []
  public var tcp: TCPStats? = nil
  public var churn: ChurnStats? = nil

  public init(id: String, kind: FlowSpec.Kind) {
    self.id = id
    self.kind = kind
  }
}

/// The long-lived echo connection's history.
public struct TCPStats: Sendable, Codable, Hashable {
  public var connectAttempts = 0
  public var established = 0
  public var connected = false
  /// Established connections that broke (RST, or no progress for `brokenAfter`).
  public var broken = 0
  /// Handshakes that did not complete within `brokenAfter`.
  public var connectFailures = 0
  public var reconnects = 0
  public var retransmits = 0
  public var bytesSent = 0
  public var bytesEchoed = 0
  public var corruptBytes = 0
  public init() {}
}

/// Short-connection churn results.
public struct ChurnStats: Sendable, Codable, Hashable {
  public var attempted = 0
  public var succeeded = 0
  public var failed = 0
  public var reset = 0
  public var active = 0
  public var retransmits = 0
  public init() {}
}

/// Counts for one marked time window. Losses and churn outcomes belong to the phase in which the
/// request or connection started.
public struct PhaseReport: Sendable, Codable, Hashable {
  public var name: String
  public var startedAt: UInt64
  public var endedAt: UInt64?
  public var sent = 0
  public var received = 0
  public var lost = 0
  public var connectionsAttempted = 0
  public var connectionsFailed = 0
  public var tcpBroken = 0
  public var tcpRetransmits = 0

  public init(name: String, startedAt: UInt64) {
    self.name = name
    self.startedAt = startedAt
  }
}

/// Sums over all flows.
public struct WorkloadTotals: Sendable, Codable, Hashable {
  public var sent = 0
  public var received = 0
  public var lost = 0
  public var late = 0
  public var corrupt = 0
  public var inFlight = 0
  public var tcpBroken = 0
  public var tcpRetransmits = 0
  public var churnFailed = 0
  public var unsolicited = 0
  public init() {}
}

/// Everything a VM's workload observed up to `now`.
public struct WorkloadReport: Sendable, Codable, Hashable {
  public var vm: String
  public var ip: String
  public var now: UInt64
  public var stopped: Bool
  public var drained: Bool
  public var flows: [FlowReport]
  public var phases: [PhaseReport]
  /// Packets not for this VM's address, or matching no flow.
  public var unexpectedPackets: Int
  /// Not parseable, or a bad checksum.
  public var malformedPackets: Int
  public var totals: WorkloadTotals

  /// The flow with this id, if any.
  public func flow(_ id: String) -> FlowReport? { flows.first { $0.id == id } }
}
