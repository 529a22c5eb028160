public import HostnatAddressing
import HostnatPackets

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
  /// NAT rules: a new connection uses the port blocks of the lowest-numbered rule whose destinations
  /// contain its destination, or the default blocks (`ruleNumber` 0) when none does.
  public var rules: [NATRuleDestinations]

  public init(
    name: String = "gateway", endpointIndependentMapping: Bool = true, timeouts: NATTimeouts = .init(),
    drainedNatIPs: [IPv4Address] = [], logging: LoggingConfig = .init(), rules: [NATRuleDestinations] = []
  ) {
    self.name = name
    self.endpointIndependentMapping = endpointIndependentMapping
    self.timeouts = timeouts
    self.drainedNatIPs = drainedNatIPs
    self.logging = logging
    self.rules = rules
  }
}

/// The match of a Cloud NAT rule: the destinations whose new connections use the rule's NAT IPs.
public struct NATRuleDestinations: Sendable, Hashable {
  /// 1 or more (0 stands for the gateway's default NAT IPs in `PortBlock.ruleNumber`); unique per gateway.
  public var ruleNumber: Int
  public var destinations: [IPv4CIDR]

  public init(ruleNumber: Int, destinations: [IPv4CIDR]) {
    self.ruleNumber = ruleNumber
    self.destinations = destinations
  }
}

/// A contiguous range of NAT ports on one NAT IP, owned by one VM. `ports` must lie in 1024..<65536.
public struct PortBlock: Sendable, Hashable {
  public var natIP: IPv4Address
  public var ports: Range<Int>
  /// The NAT rule whose NAT IP this block is on; 0 = the gateway's default NAT IPs.
  public var ruleNumber: Int
  public init(natIP: IPv4Address, ports: Range<Int>, ruleNumber: Int = 0) {
    self.natIP = natIP
    self.ports = ports
    self.ruleNumber = ruleNumber
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
  /// Name of the VPC network the VM is in: the key of its policy in `EngineConfig.networks`. A VM
  /// whose network has no policy there gets no firewall, routes or Private Google Access.
  public var network: String
  /// Private Google Access is on in the VM's subnet: traffic to the network's Google APIs ranges
  /// leaves untranslated (except from a primary IP with an external IP, which uses that).
  public var privateGoogleAccess: Bool
  /// The instance's network tags: firewall rules with target tags apply only to VMs carrying one.
  public var tags: [String]

  public init(
    id: String, primaryIP: IPv4Address, natSourceRanges: [IPv4CIDR], externalIP: IPv4Address? = nil,
    portBlocks: [PortBlock], gateway: GatewaySettings = .init(), network: String = "", privateGoogleAccess: Bool = false,
    tags: [String] = []
  ) {
    self.id = id
    self.primaryIP = primaryIP
    self.natSourceRanges = natSourceRanges
    self.externalIP = externalIP
    self.portBlocks = portBlocks
    self.gateway = gateway
    self.network = network
    self.privateGoogleAccess = privateGoogleAccess
    self.tags = tags
  }
}

/// The whole configuration of one engine, applied atomically with `NATEngine.apply`.
public struct EngineConfig: Sendable, Hashable {
  public var vms: [VMConfig]
  /// Also log drops that belong to no VM (no NAT configured, filtered inbound, unmatched ICMP).
  public var logUnattributedDrops: Bool
  /// VPC network policies by network name (`VMConfig.network`).
  public var networks: [String: NetworkPolicy]

  public init(vms: [VMConfig] = [], logUnattributedDrops: Bool = false, networks: [String: NetworkPolicy] = [:]) {
    self.vms = vms
    self.logUnattributedDrops = logUnattributedDrops
    self.networks = networks
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
  /// A firewall rule or route (by name) of the network's policy has a priority outside 0...65535.
  case invalidPolicy(network: String, name: String)
  /// A NAT rule number is below 1 or used twice in the VM's gateway.
  case invalidNatRule(vm: String, ruleNumber: Int)
}
