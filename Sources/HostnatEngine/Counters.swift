/// Why the engine dropped a packet. Raw values are stable (they go into log records).
public enum DropReason: UInt8, Sendable, Hashable, CaseIterable {
  case malformed = 1
  case unsupportedProtocol
  /// A non-first fragment whose first fragment was not translated (it came first, or its datagram
  /// matched no flow): fragments carry no ports, and hostnat does not reassemble.
  case fragment
  /// Source address not selected by any NAT gateway (no Internet access).
  case noNATConfigured
  /// Inbound packet matching no flow (address-and-port-dependent filtering).
  case filteredInbound
  /// The endpoint's fixed mapping cannot reach this destination (outside 5-tuple held by another
  /// endpoint, or the mapping's NAT IP is drained).
  case endpointIndependenceConflict
  /// No free port in the VM's blocks for this destination.
  case outOfResources
  /// The flow table is full.
  case flowTableFull
  /// ICMP error whose quoted datagram matches no flow.
  case unmatchedICMPError
  /// Denied by a VPC firewall rule (an explicit one or the implied deny-all ingress).
  case firewallDenied
  /// A custom route sends the destination to a next hop other than the Internet gateway, so Cloud NAT
  /// does not apply (the host does not emulate next-hop instances or tunnels).
  case routedToNextHop
}

/// What to do with a packet after translation.
@frozen
public enum Verdict: Sendable, Hashable {
  /// Send on: to the Internet (outbound) or to the VM (inbound).
  case forward
  /// Outbound, untranslated, to a destination inside the VPC (a subnet route): the host sends it
  /// through the VPC fabric to the destination's host, never to the Internet.
  case forwardInVPC
  case drop(DropReason)
}

/// Per-VM counters.
public struct VMCounters: Sendable, Hashable {
  public var packetsOut: UInt64 = 0
  public var bytesOut: UInt64 = 0
  public var packetsIn: UInt64 = 0
  public var bytesIn: UInt64 = 0
  public var newFlows: UInt64 = 0
  public var droppedEndpointIndependenceConflict: UInt64 = 0
  public var droppedOutOfResources: UInt64 = 0
  public var droppedFlowTableFull: UInt64 = 0
  /// Packets denied by a firewall rule, both directions.
  public var droppedFirewall: UInt64 = 0
  public var routedToNextHop: UInt64 = 0
  /// Packets that went through Private Google Access untranslated, both directions.
  public var privateGoogleAccessPackets: UInt64 = 0
  /// Packets to or from other VMs inside the VPC (subnet routes, never NATed), both directions.
  public var vpcPackets: UInt64 = 0
  public init() {}
}

/// Engine-wide counters.
public struct GlobalCounters: Sendable, Hashable {
  public var translatedOut: UInt64 = 0
  public var translatedIn: UInt64 = 0
  public var oneToOneOut: UInt64 = 0
  public var oneToOneIn: UInt64 = 0
  public var icmpErrorsTranslated: UInt64 = 0
  public var malformed: UInt64 = 0
  public var unsupportedProtocol: UInt64 = 0
  public var fragments: UInt64 = 0
  public var noNATConfigured: UInt64 = 0
  public var filteredInbound: UInt64 = 0
  public var unmatchedICMPError: UInt64 = 0
  public var flowsCreated: UInt64 = 0
  public var flowsExpired: UInt64 = 0
  /// Flows ended because a new config took their block or VM away.
  public var flowsEndedByConfig: UInt64 = 0
  public var firewallDeniedEgress: UInt64 = 0
  public var firewallDeniedIngress: UInt64 = 0
  public var routedToNextHop: UInt64 = 0
  public var privateGoogleAccessOut: UInt64 = 0
  public var privateGoogleAccessIn: UInt64 = 0
  /// Packets sent to, and accepted from, other VMs through the VPC fabric.
  public var vpcOut: UInt64 = 0
  public var vpcIn: UInt64 = 0
  public init() {}
}
