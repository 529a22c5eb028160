public import HostnatAddressing
import HostnatPackets

/// A flow as seen from outside the engine (tests, admin tools). Not used on the packet path.
public struct FlowSnapshot: Sendable, Hashable {
  public var protocolNumber: UInt8
  public var insideIP: IPv4Address
  public var insidePort: UInt16
  public var remoteIP: IPv4Address
  public var remotePort: UInt16
  public var natIP: IPv4Address
  public var natPort: UInt16
  public var expiresAt: UInt64
  public var vmID: String?

  public init(
    protocolNumber: UInt8, insideIP: IPv4Address, insidePort: UInt16, remoteIP: IPv4Address, remotePort: UInt16,
    natIP: IPv4Address, natPort: UInt16, expiresAt: UInt64, vmID: String?
  ) {
    self.protocolNumber = protocolNumber
    self.insideIP = insideIP
    self.insidePort = insidePort
    self.remoteIP = remoteIP
    self.remotePort = remotePort
    self.natIP = natIP
    self.natPort = natPort
    self.expiresAt = expiresAt
    self.vmID = vmID
  }
}

/// The host data plane's NAT: translates IPv4 packets in place between VMs and the Internet,
/// Cloud NAT style (endpoint-independent mapping, address-and-port-dependent filtering, per-VM port
/// blocks, drained NAT IPs, 1:1 external IPs, NAT rules), inside the VPC around the VMs (firewall
/// rules, custom routes, Private Google Access: see Policy.swift) for VMs whose network has a policy.
///
/// Single-threaded by design: one engine per packet-processing thread, no locks. The packet path
/// allocates nothing and touches only the flat flow region and the compiled config. The clock is an
/// argument (`now`, nanoseconds of any monotonic clock that survives with the region).
///
/// Refresh policy: outbound packets refresh every flow; inbound packets refresh TCP flows only
/// (their timeout follows the state the packet leaves, so established downloads stay alive and
/// FIN/RST shorten it); inbound UDP/ICMP never extend a mapping (RFC 4787 REQ-6 allows either).
/// Hairpinning is not done here: a packet to another VM's NAT IP leaves like any Internet packet.
///
/// Where things are: this file holds state, config swaps and batches; `Engine+PacketPath` the
/// steps both directions share (classify, rewrite, count); `Engine+Outbound` and `Engine+Inbound`
/// the two packet paths; `Engine+Flows` flow creation and `Engine+Ports` port choice;
/// `Engine+Expiry` timeouts and re-checks after a config change; `Engine+VPC` firewall, routes and
/// Private Google Access; `Engine+ICMPErrors` and `Engine+Fragments` the packets that follow
/// another's flow.
public final class NATEngine {
  var table: FlowTable
  var config: CompiledConfig
  let ownedRegion: UnsafeMutableRawBufferPointer?
  public internal(set) var globalCounters = GlobalCounters()
  let fragmentTable = FragmentTable()
  /// Connection state of the stateless paths (1:1, Private Google Access) for stateful firewalling.
  let connTrack = ConnTrackTable()
  /// Where log records go; nil disables logging regardless of the gateway settings.
  public var logSink: LogRing?

  /// Bytes a region for `capacity` flows needs.
  public static func regionSize(capacity: Int) -> Int { FlowTable.regionSize(capacity: capacity) }

  /// Allocates and owns a region for `capacity` flows.
  public convenience init(capacity: Int, config: EngineConfig = .init(), seed: UInt64 = 0x5EED) throws(EngineError) {
    guard capacity > 0, capacity < Int(UInt32.max / 4) else { throw .invalidCapacity(capacity) }
    let region = UnsafeMutableRawBufferPointer.allocate(byteCount: FlowTable.regionSize(capacity: capacity), alignment: 64)
    do {
      try self.init(formatting: region, capacity: capacity, config: config, seed: seed, owned: true)
    } catch {
      region.deallocate()
      throw error
    }
  }

  /// Formats an externally owned region (e.g. a mapped file) for `capacity` flows. The region must
  /// outlive the engine and be 8-byte aligned.
  public convenience init(
    formatting region: UnsafeMutableRawBufferPointer, capacity: Int, config: EngineConfig = .init(), seed: UInt64 = 0x5EED
  ) throws(EngineError) {
    try self.init(formatting: region, capacity: capacity, config: config, seed: seed, owned: false)
  }

  private init(
    formatting region: UnsafeMutableRawBufferPointer, capacity: Int, config: EngineConfig, seed: UInt64, owned: Bool
  ) throws(EngineError) {
    let compiled = try CompiledConfig(config, previous: nil)
    table = try FlowTable.format(region, capacity: capacity, seed: seed)
    self.config = compiled
    ownedRegion = owned ? region : nil
    table.generation = 1
  }

  /// Re-attaches to a region formatted earlier (by this or a previous process) and keeps its flows.
  /// Pass the current config: flows are re-checked against it lazily (on lookup and in `sweep`).
  /// The EIM port-use counts (see `pickPort`) are recounted from the region's mappings.
  public init(attaching region: UnsafeMutableRawBufferPointer, config: EngineConfig) throws(EngineError) {
    let compiled = try CompiledConfig(config, previous: nil)
    table = try FlowTable.attach(region)
    self.config = compiled
    ownedRegion = nil
    table.generation &+= 1
    compiled.rebuildPortUse(from: table)
  }

  deinit { ownedRegion?.deallocate() }

  // MARK: - Introspection

  public var capacity: Int { table.capacity }
  public var flowCount: Int { Int(table.flowCount) }
  public var mappingCount: Int { Int(table.mappingCount) }
  /// Size of the flow region in bytes.
  public var regionBytes: Int { table.bytes }

  /// The id of the VM at `index` in the config in force (log records carry indexes).
  public func vmID(at index: Int) -> String? { index >= 0 && index < config.ids.count ? config.ids[index] : nil }

  public func counters(forVM id: String) -> VMCounters? {
    guard let i = config.ids.firstIndex(of: id) else { return nil }
    return config.counters[i]
  }

  /// All live flows (allocates; for tests and tools).
  public func flows() -> [FlowSnapshot] {
    var out: [FlowSnapshot] = []
    for slot in 0..<Int(table.highWater) {
      let f = table.flows[slot]
      guard f.flags.contains(.occupied) else { continue }
      out.append(
        FlowSnapshot(
          protocolNumber: f.proto, insideIP: IPv4Address(f.insideIP), insidePort: f.insidePort,
          remoteIP: IPv4Address(f.remoteIP), remotePort: f.remotePort, natIP: IPv4Address(f.natIP), natPort: f.natPort,
          expiresAt: f.expiresAt, vmID: f.generation == table.generation ? vmID(at: Int(f.vmIndex)) : nil))
    }
    return out
  }

  // MARK: - Config

  /// Swaps in a new configuration. Validation and compilation happen before the swap; on error the
  /// old config stays. Flows are not walked here: each flow is re-checked against the new config the
  /// next time a packet or `sweep` touches it (still owned by its VM, or on a drained IP → kept;
  /// otherwise ended). The mapping table is scanned once (linear in capacity) to recount the EIM
  /// port-use state for the new block layout.
  public func apply(_ newConfig: EngineConfig, now: UInt64) throws(EngineError) {
    let compiled = try CompiledConfig(newConfig, previous: config)
    compiled.rebuildPortUse(from: table)
    config = compiled
    table.generation &+= 1
    table.sweepCursor = 0
  }

  // MARK: - Batches

  /// Translates a batch of outbound packets; `verdicts[i]` gets packet i's verdict.
  public func translateOutbound(
    _ packets: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, verdicts: UnsafeMutableBufferPointer<Verdict>, now: UInt64
  ) {
    precondition(verdicts.count >= packets.count, "verdict buffer smaller than batch")
    for i in 0..<packets.count { verdicts[i] = translateOutbound(packets[i], now: now) }
  }

  /// Translates a batch of inbound packets.
  public func translateInbound(
    _ packets: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, verdicts: UnsafeMutableBufferPointer<Verdict>, now: UInt64
  ) {
    precondition(verdicts.count >= packets.count, "verdict buffer smaller than batch")
    for i in 0..<packets.count { verdicts[i] = translateInbound(packets[i], now: now) }
  }
}
