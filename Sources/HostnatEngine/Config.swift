public import HostnatPackets

/// Idle timeouts of a NAT gateway (Cloud NAT defaults; RFC 4787/5382/5508 recommend longer ones).
public struct NATTimeouts: Sendable, Hashable {
  public var udp: Duration = .seconds(30)
  public var icmp: Duration = .seconds(30)
  public var tcpEstablished: Duration = .seconds(1200)
  public var tcpTransitory: Duration = .seconds(30)
  /// How long a closed TCP connection keeps its NAT IP:port reserved for that destination.
  public var tcpTimeWait: Duration = .seconds(120)

  public init(
    udp: Duration = .seconds(30), icmp: Duration = .seconds(30), tcpEstablished: Duration = .seconds(1200),
    tcpTransitory: Duration = .seconds(30), tcpTimeWait: Duration = .seconds(120)
  ) {
    self.udp = udp
    self.icmp = icmp
    self.tcpEstablished = tcpEstablished
    self.tcpTransitory = tcpTransitory
    self.tcpTimeWait = tcpTimeWait
  }
}

/// Which events a gateway logs (Cloud NAT's log filter).
public enum LogFilter: UInt8, Sendable, Hashable {
  case all, errorsOnly, translationsOnly
}

public struct LoggingConfig: Sendable, Hashable {
  public var enabled: Bool
  public var filter: LogFilter
  public init(enabled: Bool = false, filter: LogFilter = .all) {
    self.enabled = enabled
    self.filter = filter
  }
}

/// Settings shared by every VM a NAT gateway serves.
public struct GatewaySettings: Sendable, Hashable {
  public var name: String
  public var endpointIndependentMapping: Bool
  public var timeouts: NATTimeouts
  /// NAT IPs in the drained state: their existing flows continue, no new connection is made on them.
  public var drainedNatIPs: [IPv4Address]
  public var logging: LoggingConfig

  public init(
    name: String = "gateway", endpointIndependentMapping: Bool = true, timeouts: NATTimeouts = .init(),
    drainedNatIPs: [IPv4Address] = [], logging: LoggingConfig = .init()
  ) {
    self.name = name
    self.endpointIndependentMapping = endpointIndependentMapping
    self.timeouts = timeouts
    self.drainedNatIPs = drainedNatIPs
    self.logging = logging
  }
}

/// A contiguous range of NAT ports on one NAT IP, owned by one VM. `ports` must lie in 1024..<65536.
public struct PortBlock: Sendable, Hashable {
  public var natIP: IPv4Address
  public var ports: Range<Int>
  public init(natIP: IPv4Address, ports: Range<Int>) {
    self.natIP = natIP
    self.ports = ports
  }
}

/// What the controller pushes for one VM on this host.
public struct VMConfig: Sendable, Hashable {
  /// Stable identity (counters survive `apply` when the id stays).
  public var id: String
  public var primaryIP: IPv4Address
  /// Internal ranges of this VM that the gateway translates (primary /32 and/or alias ranges).
  /// Source addresses outside every VM's ranges get no Internet access.
  public var natSourceRanges: [IPv4CIDR]
  /// 1:1 NAT for the primary IP: when set, packets from the primary IP are rewritten to this address
  /// without port translation and bypass Cloud NAT (alias ranges still use it).
  public var externalIP: IPv4Address?
  /// The VM's port blocks. Blocks on drained NAT IPs stay listed so their flows keep being attributed.
  public var portBlocks: [PortBlock]
  public var gateway: GatewaySettings

  public init(
    id: String, primaryIP: IPv4Address, natSourceRanges: [IPv4CIDR], externalIP: IPv4Address? = nil,
    portBlocks: [PortBlock], gateway: GatewaySettings = .init()
  ) {
    self.id = id
    self.primaryIP = primaryIP
    self.natSourceRanges = natSourceRanges
    self.externalIP = externalIP
    self.portBlocks = portBlocks
    self.gateway = gateway
  }
}

/// The whole configuration of one engine, applied atomically with `NATEngine.apply`.
public struct EngineConfig: Sendable, Hashable {
  public var vms: [VMConfig]
  /// Also log drops that belong to no VM (no NAT configured, filtered inbound, unmatched ICMP).
  public var logUnattributedDrops: Bool

  public init(vms: [VMConfig] = [], logUnattributedDrops: Bool = false) {
    self.vms = vms
    self.logUnattributedDrops = logUnattributedDrops
  }
}

/// Why a configuration or region was refused.
public enum EngineError: Error, Hashable, Sendable {
  case duplicateVM(id: String)
  case tooManyVMs(Int)
  case portBlockOutOfRange(vm: String, ports: Range<Int>)
  case overlappingPortBlocks(vm: String, other: String, natIP: IPv4Address)
  case overlappingSourceRanges(vm: String, other: String)
  case duplicateExternalIP(IPv4Address)
  /// The region is smaller than `regionSize(capacity:)`.
  case regionTooSmall(needed: Int, available: Int)
  case regionMisaligned
  case invalidCapacity(Int)
  /// Attaching: the region does not start with a flow table header.
  case badMagic
  case unsupportedLayoutVersion(UInt32)
  case corruptHeader(String)
}
