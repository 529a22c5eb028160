// The intent the controller feeds the planner. Field names follow the Compute Engine API
// (Router.nats[], Subnetwork, Instance.networkInterfaces[]) so that validation errors can name the
// same paths an operator sees; addresses stay text so that a malformed one is reported with its
// field instead of being lost in a conversion before the planner sees it.

/// Everything the planner needs: topology, NAT gateways, regional auto-allocation pools and VMs.
///
/// Order matters only where Cloud NAT says it does: `natIps` order is the order in which NAT IPs
/// are filled, and `instances` order is the arrival order used when a manual pool is too small.
public struct NATIntent: Hashable, Sendable {
  public var networks: [Network]
  public var subnetworks: [Subnetwork]
  public var routers: [Router]
  public var natGateways: [NATGateway]
  public var autoNatIpPools: [AutoNATIPPool]
  public var instances: [Instance]

  public init(
    networks: [Network] = [], subnetworks: [Subnetwork] = [], routers: [Router] = [],
    natGateways: [NATGateway] = [], autoNatIpPools: [AutoNATIPPool] = [], instances: [Instance] = []
  ) {
    self.networks = networks
    self.subnetworks = subnetworks
    self.routers = routers
    self.natGateways = natGateways
    self.autoNatIpPools = autoNatIpPools
    self.instances = instances
  }
}

/// A VPC network. Only its name matters to the planner: subnets and routers refer to it.
public struct Network: Hashable, Sendable {
  public var name: String
  public init(name: String) { self.name = name }
}

/// A regional subnet with its primary range and named secondary ranges (alias IP sources).
public struct Subnetwork: Hashable, Sendable {
  public var name: String
  public var network: String
  public var region: String
  /// Primary range, "a.b.c.d/n".
  public var ipCidrRange: String
  public var secondaryIpRanges: [SecondaryRange]

  public init(name: String, network: String, region: String, ipCidrRange: String, secondaryIpRanges: [SecondaryRange] = []) {
    self.name = name
    self.network = network
    self.region = region
    self.ipCidrRange = ipCidrRange
    self.secondaryIpRanges = secondaryIpRanges
  }

  /// A named secondary range of a subnet.
  public struct SecondaryRange: Hashable, Sendable {
    public var rangeName: String
    public var ipCidrRange: String
    public init(rangeName: String, ipCidrRange: String) {
      self.rangeName = rangeName
      self.ipCidrRange = ipCidrRange
    }
  }
}

/// A Cloud Router: NAT gateways hang off it and inherit its network and region.
public struct Router: Hashable, Sendable {
  public var name: String
  public var network: String
  public var region: String
  public init(name: String, network: String, region: String) {
    self.name = name
    self.network = network
    self.region = region
  }
}

/// The addresses a region's AUTO_ONLY gateways may take, in the order they are taken.
public struct AutoNATIPPool: Hashable, Sendable {
  public var region: String
  public var natIps: [String]
  public init(region: String, natIps: [String]) {
    self.region = region
    self.natIps = natIps
  }
}

/// A NAT gateway (Router.nats[] in the Compute API).
public struct NATGateway: Hashable, Sendable {
  public var name: String
  public var router: String
  public var sourceSubnetworkIpRangesToNat: SourceSubnetworkIPRangesToNAT
  /// Used with `.listOfSubnetworks` only.
  public var subnetworks: [SubnetworkToNAT]
  public var natIpAllocateOption: NATIPAllocateOption
  /// Active manual NAT IPs (MANUAL_ONLY), in fill order.
  public var natIps: [String]
  /// Drained manual NAT IPs. As in Cloud NAT, draining moves an IP from `natIps` to here; an IP
  /// can only be drained if it is already one of this gateway's NAT IPs.
  public var drainNatIps: [String]
  /// Static: 2...57344, rounded up to a power of two (default 64). Dynamic: a power of two in
  /// 32...32768 (default 32).
  public var minPortsPerVm: Int?
  /// Dynamic only: a power of two in 64...65536, greater than the minimum (default 65536).
  public var maxPortsPerVm: Int?
  public var enableDynamicPortAllocation: Bool
  /// nil means on, except with dynamic port allocation where it means off; explicitly on together
  /// with dynamic port allocation is rejected, as in Cloud NAT.
  public var enableEndpointIndependentMapping: Bool?
  public var udpIdleTimeoutSec: Int?
  public var icmpIdleTimeoutSec: Int?
  public var tcpEstablishedIdleTimeoutSec: Int?
  public var tcpTransitoryIdleTimeoutSec: Int?
  public var tcpTimeWaitTimeoutSec: Int?
  public var logConfig: LogConfig
  /// NAT rules: a new connection whose destination matches a rule uses that rule's NAT IPs
  /// (the lowest-numbered matching rule wins); others use the gateway's default NAT IPs. Every
  /// NIC the gateway serves gets ports on every rule's IPs, whatever its traffic.
  public var rules: [NATRule]

  public init(
    name: String, router: String,
    sourceSubnetworkIpRangesToNat: SourceSubnetworkIPRangesToNAT = .allSubnetworksAllIpRanges,
    subnetworks: [SubnetworkToNAT] = [],
    natIpAllocateOption: NATIPAllocateOption = .autoOnly,
    natIps: [String] = [], drainNatIps: [String] = [],
    minPortsPerVm: Int? = nil, maxPortsPerVm: Int? = nil,
    enableDynamicPortAllocation: Bool = false, enableEndpointIndependentMapping: Bool? = nil,
    udpIdleTimeoutSec: Int? = nil, icmpIdleTimeoutSec: Int? = nil,
    tcpEstablishedIdleTimeoutSec: Int? = nil, tcpTransitoryIdleTimeoutSec: Int? = nil,
    tcpTimeWaitTimeoutSec: Int? = nil, logConfig: LogConfig = LogConfig(), rules: [NATRule] = []
  ) {
    self.name = name
    self.router = router
    self.sourceSubnetworkIpRangesToNat = sourceSubnetworkIpRangesToNat
    self.subnetworks = subnetworks
    self.natIpAllocateOption = natIpAllocateOption
    self.natIps = natIps
    self.drainNatIps = drainNatIps
    self.minPortsPerVm = minPortsPerVm
    self.maxPortsPerVm = maxPortsPerVm
    self.enableDynamicPortAllocation = enableDynamicPortAllocation
    self.enableEndpointIndependentMapping = enableEndpointIndependentMapping
    self.udpIdleTimeoutSec = udpIdleTimeoutSec
    self.icmpIdleTimeoutSec = icmpIdleTimeoutSec
    self.tcpEstablishedIdleTimeoutSec = tcpEstablishedIdleTimeoutSec
    self.tcpTransitoryIdleTimeoutSec = tcpTransitoryIdleTimeoutSec
    self.tcpTimeWaitTimeoutSec = tcpTimeWaitTimeoutSec
    self.logConfig = logConfig
    self.rules = rules
  }

  /// Which subnet ranges of the router's network and region the gateway translates.
  public enum SourceSubnetworkIPRangesToNAT: String, Hashable, Sendable, CaseIterable {
    /// Every range of every subnet, present and future; no other gateway may exist for the
    /// network in this region.
    case allSubnetworksAllIpRanges = "ALL_SUBNETWORKS_ALL_IP_RANGES"
    /// The primary range of every subnet; other gateways may take secondary ranges.
    case allSubnetworksAllPrimaryIpRanges = "ALL_SUBNETWORKS_ALL_PRIMARY_IP_RANGES"
    case listOfSubnetworks = "LIST_OF_SUBNETWORKS"
  }

  /// AUTO_ONLY takes addresses from the region's `AutoNATIPPool` as needed and gives back those
  /// that hold no ports; MANUAL_ONLY uses exactly `natIps`.
  public enum NATIPAllocateOption: String, Hashable, Sendable, CaseIterable {
    case autoOnly = "AUTO_ONLY"
    case manualOnly = "MANUAL_ONLY"
  }

  /// One listed subnet and which of its ranges to translate.
  public struct SubnetworkToNAT: Hashable, Sendable {
    public var name: String
    /// `[.allIpRanges]` alone, or any of `.primaryIpRange` and `.listOfSecondaryIpRanges`.
    public var sourceIpRangesToNat: [SourceIPRanges]
    /// Required with `.listOfSecondaryIpRanges`, forbidden otherwise.
    public var secondaryIpRangeNames: [String]

    public init(name: String, sourceIpRangesToNat: [SourceIPRanges] = [.allIpRanges], secondaryIpRangeNames: [String] = []) {
      self.name = name
      self.sourceIpRangesToNat = sourceIpRangesToNat
      self.secondaryIpRangeNames = secondaryIpRangeNames
    }
  }

  /// Which ranges of a listed subnet are translated.
  public enum SourceIPRanges: String, Hashable, Sendable, CaseIterable {
    case allIpRanges = "ALL_IP_RANGES"
    case primaryIpRange = "PRIMARY_IP_RANGE"
    case listOfSecondaryIpRanges = "LIST_OF_SECONDARY_IP_RANGES"
  }

  /// Passed through to hosts untouched; the planner only carries it.
  public struct LogConfig: Hashable, Sendable {
    public var enable: Bool
    public var filter: Filter
    public init(enable: Bool = false, filter: Filter = .all) {
      self.enable = enable
      self.filter = filter
    }
    /// Which translations hosts log.
    public enum Filter: String, Hashable, Sendable, CaseIterable {
      case errorsOnly = "ERRORS_ONLY"
      case translationsOnly = "TRANSLATIONS_ONLY"
      case all = "ALL"
    }
  }
}

/// A NAT rule: destinations it matches use its IPs instead of the gateway's.
///
/// Rule IPs are manual (reserved addresses), whatever the gateway's `natIpAllocateOption`, and
/// belong to this rule alone: not to another rule, the gateway's default NAT IPs or another
/// gateway. Draining works as for the gateway: an IP moves from `sourceNatActiveIps` to
/// `sourceNatDrainIps`, and only an IP that already is one of this rule's IPs can be drained.
public struct NATRule: Hashable, Sendable {
  /// 1...65000 (`validNumbers`), unique within the gateway; the lowest-numbered matching rule
  /// wins. Cloud NAT also allows 0, but hostnat's hosts use rule number 0 for the gateway's
  /// default NAT IPs.
  public var ruleNumber: Int
  /// A CEL expression over `destination.ip`; see `NATRuleMatch` for the accepted subset.
  public var match: String
  public var sourceNatActiveIps: [String]
  public var sourceNatDrainIps: [String]
  public var description: String

  /// The rule numbers the planner accepts, in an intent and in a snapshot.
  static let validNumbers = 1...65000

  public init(ruleNumber: Int, match: String, sourceNatActiveIps: [String] = [], sourceNatDrainIps: [String] = [], description: String = "") {
    self.ruleNumber = ruleNumber
    self.match = match
    self.sourceNatActiveIps = sourceNatActiveIps
    self.sourceNatDrainIps = sourceNatDrainIps
    self.description = description
  }
}

/// A VM and the host it runs on.
public struct Instance: Hashable, Sendable {
  public var name: String
  public var host: String
  public var networkInterfaces: [NetworkInterface]

  public init(name: String, host: String, networkInterfaces: [NetworkInterface]) {
    self.name = name
    self.host = host
    self.networkInterfaces = networkInterfaces
  }
}

/// A VM NIC. Each NIC of a VM must be in a different network.
public struct NetworkInterface: Hashable, Sendable {
  public var subnetwork: String
  /// Primary internal IP, inside the subnet's primary range.
  public var networkIP: String
  public var aliasIpRanges: [AliasIPRange]
  /// An external IP takes precedence over Cloud NAT for the primary IP only ("packets sent from
  /// the primary IP address of that interface do not use Cloud NAT"); alias ranges still use NAT.
  public var externalIP: String?

  public init(subnetwork: String, networkIP: String, aliasIpRanges: [AliasIPRange] = [], externalIP: String? = nil) {
    self.subnetwork = subnetwork
    self.networkIP = networkIP
    self.aliasIpRanges = aliasIpRanges
    self.externalIP = externalIP
  }
}

/// An alias IP range of a NIC: from the subnet's primary range when `subnetworkRangeName` is nil,
/// otherwise from the named secondary range.
public struct AliasIPRange: Hashable, Sendable {
  public var ipCidrRange: String
  public var subnetworkRangeName: String?
  public init(ipCidrRange: String, subnetworkRangeName: String? = nil) {
    self.ipCidrRange = ipCidrRange
    self.subnetworkRangeName = subnetworkRangeName
  }
}
