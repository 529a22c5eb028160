public import HostnatAddressing
public import HostnatEngine

/// Per-VM counters of the engine, with drops by reason (DropReason names as keys).
public struct VMStats: Codable, Sendable, Hashable {
  public var packetsOut: UInt64
  public var bytesOut: UInt64
  public var packetsIn: UInt64
  public var bytesIn: UInt64
  public var newFlows: UInt64
  public var drops: [String: UInt64]

  public init(_ c: VMCounters) {
    packetsOut = c.packetsOut
    bytesOut = c.bytesOut
    packetsIn = c.packetsIn
    bytesIn = c.bytesIn
    newFlows = c.newFlows
    drops = [
      "endpointIndependenceConflict": c.droppedEndpointIndependenceConflict,
      "outOfResources": c.droppedOutOfResources,
      "flowTableFull": c.droppedFlowTableFull,
      "firewallDenied": c.droppedFirewall,
      "routedToNextHop": c.routedToNextHop,
    ]
    privateGoogleAccessPackets = c.privateGoogleAccessPackets
    vpcPackets = c.vpcPackets
  }

  /// Packets to or from the Google APIs ranges that passed untranslated (Private Google Access).
  public var privateGoogleAccessPackets: UInt64
  /// Packets to or from other VMs inside the VPC (untranslated, through the fabric).
  public var vpcPackets: UInt64
}

/// The engine's global counters, Codable.
public struct GlobalStats: Codable, Sendable, Hashable {
  public var translatedOut: UInt64
  public var translatedIn: UInt64
  public var oneToOneOut: UInt64
  public var oneToOneIn: UInt64
  public var icmpErrorsTranslated: UInt64
  public var malformed: UInt64
  public var unsupportedProtocol: UInt64
  public var fragments: UInt64
  public var noNATConfigured: UInt64
  public var filteredInbound: UInt64
  public var unmatchedICMPError: UInt64
  public var flowsCreated: UInt64
  public var flowsExpired: UInt64
  public var flowsEndedByConfig: UInt64
  /// Denied by a firewall rule (or the implied ingress deny), each direction.
  public var firewallDeniedEgress: UInt64
  public var firewallDeniedIngress: UInt64
  /// Outbound packets a custom route sent to a next hop other than the Internet gateway: no NAT.
  public var routedToNextHop: UInt64
  /// Private Google Access packets, untranslated.
  public var privateGoogleAccessOut: UInt64
  public var privateGoogleAccessIn: UInt64
  /// VM-to-VM packets sent into, and accepted from, the VPC fabric.
  public var vpcOut: UInt64
  public var vpcIn: UInt64

  public init(_ g: GlobalCounters) {
    translatedOut = g.translatedOut
    translatedIn = g.translatedIn
    oneToOneOut = g.oneToOneOut
    oneToOneIn = g.oneToOneIn
    icmpErrorsTranslated = g.icmpErrorsTranslated
    malformed = g.malformed
    unsupportedProtocol = g.unsupportedProtocol
    fragments = g.fragments
    noNATConfigured = g.noNATConfigured
    filteredInbound = g.filteredInbound
    unmatchedICMPError = g.unmatchedICMPError
    flowsCreated = g.flowsCreated
    flowsExpired = g.flowsExpired
    flowsEndedByConfig = g.flowsEndedByConfig
    firewallDeniedEgress = g.firewallDeniedEgress
    firewallDeniedIngress = g.firewallDeniedIngress
    routedToNextHop = g.routedToNextHop
    privateGoogleAccessOut = g.privateGoogleAccessOut
    privateGoogleAccessIn = g.privateGoogleAccessIn
    vpcOut = g.vpcOut
    vpcIn = g.vpcIn
  }
}

/// Counters of the agent's packet loop (the underlay side; translation counters are the engine's).
public struct AgentLoopCounters: Codable, Sendable, Hashable {
  /// Datagrams received.
  public var received: UInt64 = 0
  /// Datagrams handed to the kernel.
  public var sent: UInt64 = 0
  /// Not Geneve carrying IPv4 (or truncated).
  public var malformedUnderlay: UInt64 = 0
  /// Geneve with a VNI other than 1, 2 or a VPC fabric VNI.
  public var unknownVNI: UInt64 = 0
  /// VM-to-VM packets sent to the VPC fabric, and received from it for a VM here.
  public var vpcSent: UInt64 = 0
  public var vpcReceived: UInt64 = 0
  /// Packets the engine sent into the VPC from a VM whose network has no fabric tag (nowhere to go).
  public var noFabric: UInt64 = 0
  /// Inbound packets translated for a VM whose underlay address is not known yet.
  public var unknownVM: UInt64 = 0
  /// Outbound packets translated while no edge is set.
  public var noEdge: UInt64 = 0
  /// Packets the engine dropped (reasons are in the engine's counters).
  public var engineDropsOut: UInt64 = 0
  public var engineDropsIn: UInt64 = 0
  /// Packets dropped because no config has been applied yet (the flow table is kept untouched).
  public var notConfigured: UInt64 = 0
  public var sendErrors: UInt64 = 0
  public var batches: UInt64 = 0
  public var sweeps: UInt64 = 0
  public init() {}
}

/// A snapshot of an agent data plane, taken under its lock.
public struct AgentDataplaneStats: Codable, Sendable, Hashable {
  /// Version of the config in force (nil before the first `apply`).
  public var appliedVersion: UInt64?
  public var flows: Int
  public var mappings: Int
  public var capacity: Int
  /// Per VM id.
  public var vms: [String: VMStats]
  public var global: GlobalStats
  public var loop: AgentLoopCounters
  /// Learned VM underlay addresses, by VM id.
  public var vmAddresses: [String: SocketAddress]
  public var edge: SocketAddress?
}
