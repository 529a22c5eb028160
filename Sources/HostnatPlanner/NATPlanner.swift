/// The Cloud Router side of Cloud NAT: holds the intent and decides, for every VM NIC a gateway
/// translates, which NAT IP and port blocks it gets.
///
/// Allocations are stable: a change touches only the NICs it is about. Adding, removing or
/// changing a VM, adding or removing NAT IPs, draining, or changing port settings never moves
/// another NIC's ports; a NIC whose ports must change keeps what it can (it gains or loses blocks
/// at the end of its list). Every accepted change is validated first and leaves the planner
/// untouched when refused. The planner is deterministic: the same sequence of calls gives the
/// same allocations.
///
/// Ports are handed out in aligned power-of-two blocks (see `NATPorts`). A NIC's blocks prefer the
/// NAT IP it already uses; new NICs fill NAT IPs in pool order. Blocks leaving a NIC are
/// quarantined, not freed: the controller calls `releaseQuarantined` once the old owner can no
/// longer use them (its host acknowledged, or its lease expired).
///
/// The unit of allocation is a NIC as served by one gateway: its primary IP and alias ranges
/// share the ports. When the pool is too small, NICs wait in arrival order and are served as soon
/// as ports come free (released quarantine, more NAT IPs); gateway status lists them.
///
/// Draining a NAT IP keeps every block on it with its NIC, reported as drain ranges, and gives
/// the NIC replacement blocks on active IPs. Undraining makes the old blocks active again and
/// gives back the most recent surplus (normally the replacements); removing a drained IP from the
/// gateway quarantines its blocks.
///
/// NAT rules: each rule's IPs are a pool of their own, and every NIC a gateway serves is a unit
/// of allocation on its default pool and on each rule's pool, all at the gateway's minPortsPerVm
/// (static, even with dynamic port allocation). Rule units wait, drain, and quarantine exactly
/// like default ones; a NIC waiting on one rule still holds its other ports.
///
/// A value type: the controller owns one and serialises access to it.
public struct NATPlanner: Sendable {
  var config = CompiledIntent()
  var records: [InstanceRecord] = []
  var freeRecords: [Int32] = []
  var recordIDs: [String: Int32] = [:]
  var nextArrival: Int64 = 0
  var addresses = AddressIndex()
  var units: [Unit] = []
  var freeUnits: [Int32] = []
  var slots: [NATIPSlot] = []
  var freeSlots: [Int32] = []
  var slotByAddress: [UInt32: Int32] = [:]
  var pools = PoolTable<PoolState>()
  var quarantineEntries: [UInt64: QuarantineEntry] = [:]
  var nextQuarantineID: UInt64 = 1
  var nextPendingSeq: Int64 = 0
  /// Increases with every accepted mutating call; quarantined blocks record it.
  public internal(set) var epoch: UInt64 = 0
  // Collected during one change for its summary.
  var changed: [String] = []
  var newlyQuarantined: [UInt64] = []

  /// An empty planner: no topology, no instances.
  public init() {}

  /// Plans `intent` from scratch, or on top of `previous` allocations (kept wherever the intent
  /// still allows, exactly as if the changes had been applied to the planner that took them).
  public init(intent: NATIntent, restoring previous: NATPlannerSnapshot? = nil) throws(PlannerValidationError) {
    if let previous { self = try NATPlanner(snapshot: previous) }
    try apply(intent)
  }

  /// The current intent, instances in arrival order.
  public var intent: NATIntent {
    var result = config.intent
    result.instances = records.filter(\.live).sorted { $0.arrival < $1.arrival }.map(\.spec)
    return result
  }

  public var instanceCount: Int { recordIDs.count }
}

/// A change the controller applies to the planner; see `NATPlanner.apply(_:)`.
public enum NATChange: Hashable, Sendable {
  case upsertInstance(Instance)
  case removeInstance(String)
  case upsertNetwork(Network)
  case removeNetwork(String)
  case upsertSubnetwork(Subnetwork)
  case removeSubnetwork(String)
  case upsertRouter(Router)
  case removeRouter(String)
  case upsertNatGateway(NATGateway)
  case removeNatGateway(String)
  case setAutoNatIpPool(AutoNATIPPool)
}

// MARK: - Internal state

struct PortBlock: Hashable, Sendable {
  var slot: Int32
  var offset: UInt16
  var level: UInt8
  var size: Int { 1 << Int(level) }
}

/// One NAT IP the planner knows: in a gateway's pool, or ownerless while quarantined blocks on it
/// wait for release.
struct NATIPSlot: Sendable {
  var address: UInt32
  var space = PortSpace()
  /// The pool holding the address, nil while only quarantined blocks keep it known.
  var pool: PoolID? = nil
  /// Position in the pool's fill order.
  var position: Int32 = -1
  var drained = false
  var auto = false
  var usedBlocks: Int32 = 0
  var quarantinedBlocks: Int32 = 0
  var live = true

  init(address: UInt32) { self.address = address }
}

/// The allocation unit: one NIC of one instance as served by one gateway.
struct Unit: Sendable {
  var instance: Int32
  var nic: Int32
  var pool: PoolID
  var blocks: SmallArray<PortBlock> = []
  /// Ports the unit should hold on active NAT IPs.
  var target: Int32
  /// Position in the pool's waiting queue, nil when not waiting.
  var pendingSeq: Int64? = nil
  var live = true
}

/// Kept in a flat array indexed by instance id (not optional: reading through an Optional
/// element copies the whole record); `live` is false for a freed id.
struct InstanceRecord: Sendable {
  var spec: Instance
  var arrival: Int64
  var nics: IntentNICs
  var units: SmallArray<Int32> = []
  var changedEpoch: UInt64 = .max
  var live = true

  static let dead: InstanceRecord = {
    var record = InstanceRecord(spec: Instance(name: "", host: "", networkInterfaces: []), arrival: -1, nics: [])
    record.live = false
    return record
  }()
}

struct PendingEntry: Sendable {
  var seq: Int64
  var unit: Int32
}

/// A pool of NAT IPs: a gateway's default NAT IPs, or one of its rules' (see `PoolID`).
struct PoolState: Sendable {
  /// The gateway's name, for a rule pool too (quarantined blocks name the gateway).
  var name: String
  /// nil for the gateway's default pool.
  var ruleNumber: Int32?
  var auto: Bool
  var region: String
  /// nil for a gateway restored from a snapshot before the intent said what it is.
  var policy: PortPolicy?
  /// Slots in fill order.
  var fillOrder: [Int32] = []
  /// Per block level: no pool position before this one has a free block of that level.
  var hints: [Int32] = Array(repeating: 0, count: 16)
  var pending: [PendingEntry] = []
  var stalePending = 0

  var key: PoolKey { PoolKey(gateway: name, rule: ruleNumber) }

  init(name: String, ruleNumber: Int32? = nil, auto: Bool, region: String, policy: PortPolicy?) {
    self.name = name
    self.ruleNumber = ruleNumber
    self.auto = auto
    self.region = region
    self.policy = policy
  }
}

/// Per-pool values addressed by `PoolID`, stored flat in fill order (every gateway's default
/// pool, then the rules): `position(of:)` is the only place that knows the layout.
struct PoolTable<Value> {
  private(set) var values: [Value] = []
  private(set) var gatewayCount = 0

  @inline(__always)
  private func position(of id: PoolID) -> Int {
    switch id.kind {
    case .gateway(let g): g.index
    case .rule(let r): gatewayCount + r.index
    }
  }

  subscript(id: PoolID) -> Value {
    @inline(__always) _read { yield values[position(of: id)] }
    @inline(__always) _modify { yield &values[position(of: id)] }
  }

  /// Every pool in fill order: default pools, then rules.
  var ids: [PoolID] { (0..<gatewayCount).map { .gateway(GatewayID($0)) } + (0..<(values.count - gatewayCount)).map { .rule(RuleID($0)) } }

  /// Adds the next rule pool (or default pool, before any rule pool) and returns its id.
  @discardableResult
  mutating func append(_ value: Value, rule: Bool) -> PoolID {
    if rule {
      values.append(value)
      return .rule(RuleID(values.count - 1 - gatewayCount))
    }
    values.insert(value, at: gatewayCount)
    gatewayCount += 1
    return .gateway(GatewayID(gatewayCount - 1))
  }

  func map<T>(_ transform: (Value) throws -> T) rethrows -> PoolTable<T> {
    var result = PoolTable<T>()
    result.values = try values.map(transform)
    result.gatewayCount = gatewayCount
    return result
  }
}

extension PoolTable: Sendable where Value: Sendable {}

struct QuarantineEntry: Sendable {
  var block: PortBlock
  var nic: NICRef
  var host: String
  var epoch: UInt64
  var reason: QuarantinedBlock.Reason
}
