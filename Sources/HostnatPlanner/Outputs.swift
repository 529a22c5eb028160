public import HostnatAddressing

/// A NAT IP and an aligned block of its ports, written "203.0.113.5:1024-1087" as in gcloud's
/// `natIpPortRanges`.
public struct NATPortRange: Hashable, Comparable, Sendable, CustomStringConvertible {
  public var natIp: IPv4Address
  public var firstPort: Int
  public var lastPort: Int

  public init(natIp: IPv4Address, firstPort: Int, lastPort: Int) {
    self.natIp = natIp
    self.firstPort = firstPort
    self.lastPort = lastPort
  }

  public var portCount: Int { lastPort - firstPort + 1 }
  public var description: String { "\(natIp):\(firstPort)-\(lastPort)" }

  public static func < (lhs: Self, rhs: Self) -> Bool { (lhs.natIp, lhs.firstPort) < (rhs.natIp, rhs.firstPort) }
}

/// Names one allocation: a VM NIC as served by one gateway. A NIC usually has one; it has two
/// when its primary range and a secondary range are translated by different gateways.
public struct NICRef: Hashable, Sendable, CustomStringConvertible {
  public var instance: String
  public var nicIndex: Int
  public var gateway: String

  public init(instance: String, nicIndex: Int = 0, gateway: String) {
    self.instance = instance
    self.nicIndex = nicIndex
    self.gateway = gateway
  }

  public var description: String { "\(instance)/nic\(nicIndex)@\(gateway)" }
}

/// What one VM NIC gets from one gateway: the unit of port allocation.
///
/// The NIC is the unit, as in Cloud NAT ("the per-VM number of ports is the number of ports
/// available to all containers on that VM"): the primary IP and every alias range the gateway
/// translates share these ports, and `natMappingInfo` lists the same ranges under each source.
public struct NICNATAllocation: Hashable, Sendable {
  public var nic: NICRef
  public var host: String
  /// The primary IP, when this gateway translates it (not when the NIC has an external IP).
  public var sourceVirtualIp: String?
  public var sourceAliasIpRanges: [String]
  /// Ranges for new connections, sorted.
  public var natIpPortRanges: [NATPortRange]
  /// Ranges on drained NAT IPs: existing connections only.
  public var drainNatIpPortRanges: [NATPortRange]
  public var numTotalNatPorts: Int
  public var numTotalDrainNatPorts: Int
  /// True while the NIC waits for ports the pool cannot give (listed as left out).
  public var waitingForNatPorts: Bool
  /// Dynamic port allocation state; nil for static allocation.
  public var dynamic: DynamicPortState?
  /// Ports on each NAT rule's IPs, one entry per rule of the gateway, sorted by rule number.
  /// `natIpPortRanges` and `drainNatIpPortRanges` above are the gateway's default ones.
  public var ruleAllocations: [RuleAllocation]
}

/// A NIC's ports on one NAT rule's IPs: used for new connections to destinations the rule
/// matches (when no lower-numbered rule matches them too).
///
/// Always `minPortsPerVm` ports, also with dynamic port allocation (see `NATPlanner`).
public struct RuleAllocation: Hashable, Sendable {
  public var ruleNumber: Int
  /// Ranges for new connections, sorted; empty while the NIC waits for ports on this rule.
  public var natIpPortRanges: [NATPortRange]
  /// Ranges on the rule's drained IPs: existing connections only.
  public var drainNatIpPortRanges: [NATPortRange]
  /// True while the rule's IPs have no room for this NIC's ports (see `NATRuleStatus`).
  public var waitingForNatPorts: Bool
}

/// Dynamic port allocation for one NIC: what a grant would add and a shrink would take.
public struct DynamicPortState: Hashable, Sendable {
  public var minPortsPerVm: Int
  public var maxPortsPerVm: Int
  /// Ports the NIC should hold now (a power of two between min and max).
  public var targetPorts: Int
  /// The block `grant` would add next; nil at the maximum or when no NAT IP has room.
  public var nextGrant: NATPortRange?
  /// The blocks one halving step of `reclaim` would take back.
  public var nextReclaim: [NATPortRange]
}

/// gcloud's `get-nat-mapping-info` for one VM: one entry per translated source (primary IP or
/// alias range) of each NIC.
public struct VMNATMappingInfo: Hashable, Sendable {
  public var instanceName: String
  public var interfaceNatMappings: [InterfaceNATMapping]
}

/// One translated source of a NIC and the ports of the NIC it belongs to.
public struct InterfaceNATMapping: Hashable, Sendable {
  public var nicIndex: Int
  public var gateway: String
  /// Exactly one of `sourceVirtualIp` and `sourceAliasIpRange` is set.
  public var sourceVirtualIp: String?
  public var sourceAliasIpRange: String?
  public var natIpPortRanges: [NATPortRange]
  public var drainNatIpPortRanges: [NATPortRange]
  public var numTotalNatPorts: Int
  public var numTotalDrainNatPorts: Int
  /// The NIC's ports on each NAT rule's IPs, sorted by rule number.
  public var ruleMappings: [RuleAllocation]
}

/// A gateway as the admin API shows it (Cloud Router `get-status` NAT status), plus the settings
/// hosts need.
public struct NATGatewayStatus: Hashable, Sendable {
  public var name: String
  public var autoAllocatedNatIps: [String]
  public var userAllocatedNatIps: [String]
  public var drainUserAllocatedNatIps: [String]
  /// How many more NAT IPs would let every waiting NIC get its ports, counting the free blocks
  /// already available and the alignment of block sizes (0 when nothing waits).
  public var minExtraNatIpsNeeded: Int
  /// NICs that have ports from this gateway (the API calls them VM endpoints).
  public var numVmEndpointsWithNatMappings: Int
  /// NICs left without any ports, in arrival order. (A NIC that holds some ports but waits
  /// for more, e.g. after minPortsPerVm went up on a full pool, is not listed here but counts
  /// towards `minExtraNatIpsNeeded`.)
  public var vmNicsWithoutNat: [NICRef]
  public var minPortsPerVm: Int
  public var maxPortsPerVm: Int
  public var enableDynamicPortAllocation: Bool
  public var enableEndpointIndependentMapping: Bool
  public var timeouts: NATTimeouts
  public var logConfig: NATGateway.LogConfig
  /// One entry per NAT rule, sorted by rule number.
  public var ruleStatus: [NATRuleStatus]
}

/// A NAT rule as get-status shows it.
public struct NATRuleStatus: Hashable, Sendable {
  public var ruleNumber: Int
  /// The destinations the rule's match selects: normalized CIDR strings, exactly as
  /// `NATRuleMatch.destinationRanges(match)` returns them.
  public var destinationRanges: [String]
  public var activeNatIps: [String]
  public var drainNatIps: [String]
  /// How many more NAT IPs the rule needs so that every NIC of the gateway gets its ports on the
  /// rule's IPs (counted as for the gateway).
  public var minExtraIpsNeeded: Int
  /// NICs holding ports on the rule's active IPs.
  public var numVmEndpointsWithNatMappings: Int
}

/// A block that left its owner and is not handed out again until the controller releases it
/// (`releaseQuarantined`), typically once the old owner's host acknowledged the change or its
/// lease expired. Until then it counts as owned, so no other NIC can receive it.
public struct QuarantinedBlock: Hashable, Sendable {
  public var id: UInt64
  public var range: NATPortRange
  /// The previous owner.
  public var nic: NICRef
  public var host: String
  /// The planner epoch at which the block left its owner.
  public var epoch: UInt64
  public var reason: Reason

  /// Why the block left its owner.
  public enum Reason: String, Hashable, Sendable, CaseIterable, Codable {
    case instanceRemoved
    /// The NIC's ranges are no longer translated by this gateway (selection, subnet or NIC change).
    case noLongerTranslated
    case gatewayRemoved
    case natIpRemoved
    /// minPortsPerVm/maxPortsPerVm went down, or an undrained IP gave the NIC more than it needs.
    case portsReduced
    /// Dynamic allocation shrank the NIC.
    case reclaimed
  }
}

/// What `grant` did.
public enum GrantOutcome: Hashable, Sendable {
  case granted(NATPortRange)
  case atMaximum
  case noFreePorts
  case notDynamic
  /// The NIC has not received its minimum yet.
  case waitingForNatPorts
  case unknownNic
}

/// What a successful change did, for the controller to push.
public struct PlannerChangeSummary: Hashable, Sendable {
  /// The planner's epoch after the change.
  public var epoch: UInt64
  /// Instances whose allocations changed (including removed ones), in the order they changed.
  public var changedInstances: [String]
  /// Blocks moved to quarantine by this change.
  public var quarantined: [QuarantinedBlock]
}
