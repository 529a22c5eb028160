public import HostnatAddressing
import HostnatPackets

/// A service an emulated Internet server offers (each on its well-known port).
public enum ServiceKind: String, Sendable, Hashable, Codable, CaseIterable {
  case udpEcho, tcpEcho, icmpEcho, whoami, stun, filteringProbe

  var bit: UInt8 {
    switch self {
    case .udpEcho: 1
    case .tcpEcho: 2
    case .icmpEcho: 4
    case .whoami: 8
    case .stun: 16
    case .filteringProbe: 32
    }
  }
}

/// Ports the emulated servers listen on.
public enum WellKnownPorts {
  /// Echo (RFC 862), UDP and TCP.
  public static let echo: UInt16 = 7
  /// What-is-my-IP: HTTP/1.0 GET over TCP, or any UDP datagram; answers "IP:PORT" as seen.
  public static let whoami: UInt16 = 80
  /// STUN binding (RFC 5389), UDP.
  public static let stun: UInt16 = 3478
  /// Filtering probe (UDP): acks, then sends two unsolicited datagrams from other endpoints.
  public static let filteringProbe: UInt16 = 9999
  /// Source port of the probe's unsolicited datagram sent from the same server address.
  public static let filteringProbeAlternate: UInt16 = 10000
}

/// One emulated server: an address and what it serves.
public struct ServerSpec: Sendable, Hashable, Codable {
  public var ip: IPv4Address
  public var services: Set<ServiceKind>

  public init(ip: IPv4Address, services: Set<ServiceKind>) {
    self.ip = ip
    self.services = services
  }

  /// The lab's three servers: two general-purpose ones and a NAT-behaviour one (STUN, probe).
  public static let labDefault: [ServerSpec] = [
    ServerSpec(ip: IPv4Address(203, 0, 113, 10), services: [.udpEcho, .tcpEcho, .icmpEcho, .whoami]),
    ServerSpec(ip: IPv4Address(203, 0, 113, 20), services: [.udpEcho, .tcpEcho, .icmpEcho, .whoami]),
    ServerSpec(ip: IPv4Address(203, 0, 113, 30), services: [.stun, .whoami, .icmpEcho, .filteringProbe]),
  ]

  private enum CodingKeys: String, CodingKey { case ip, services }

  // Addresses are dotted-quad text in configuration files.
  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let text = try c.decode(String.self, forKey: .ip)
    guard let address = IPv4Address(text) else {
      throw DecodingError.dataCorruptedError(
        forKey: .ip, in: c, debugDescription: "server ip '\(text)' is not a dotted-quad IPv4 address")
    }
    ip = address
    services = try c.decode(Set<ServiceKind>.self, forKey: .services)
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(ip.description, forKey: .ip)
    try c.encode(services.map(\.rawValue).sorted(), forKey: .services)
  }
}

/// Tunables of the emulated servers' TCP; defaults follow common host stacks, shortened where a
/// lab run would otherwise wait minutes.
public struct InternetConfig: Sendable, Hashable {
  public var maxConnections: Int = 65_536
  public var idleTimeout: UInt64 = 300_000_000_000
  public var timeWait: UInt64 = 10_000_000_000
  public var initialRTO: UInt64 = 200_000_000
  public var maxRTO: UInt64 = 5_000_000_000
  /// Retransmissions of one segment before the connection is reset and forgotten.
  public var maxRetransmits: Int = 8
  /// Bytes of unacknowledged echo data held per connection; beyond it the window closes.
  public var sendBufferLimit: Int = 262_144
  public var mss: Int = 1_460
  public var seed: UInt64 = 0x5EED_1A7E

  public init() {}
}

/// What the servers saw and did. `received` counts every packet handed in.
public struct InternetCounters: Sendable, Hashable, Codable {
  public var received = 0
  /// Packets emitted (replies, errors, unsolicited probes, retransmissions).
  public var replied = 0
  /// Not a well-formed IPv4/TCP/UDP/ICMP packet, or a bad checksum, or a fragment.
  public var malformed = 0
  public var noSuchServer = 0
  public var noSuchService = 0
  public var icmpEchoReplies = 0
  public var icmpIgnored = 0
  public var udpEchoReplies = 0
  public var udpPortUnreachable = 0
  public var whoamiReplies = 0
  public var stunResponses = 0
  /// Datagrams to the STUN port that are not a valid binding request.
  public var stunIgnored = 0
  public var probeAcks = 0
  public var unsolicitedSent = 0
  /// RSTs sent: closed port, no connection, table full, retransmissions exhausted.
  public var tcpResets = 0
  public var tcpAccepted = 0
  public var tcpClosed = 0
  public var tcpResetByPeer = 0
  public var tcpExpired = 0
  public var tcpTableFull = 0
  public var tcpRetransmits = 0
  public var tcpOutOfOrder = 0
  public var tcpBytesEchoed = 0
  public var tcpConnections = 0

  public init() {}
}
