public import HostnatAddressing
public import HostnatEngine
internal import HostnatPackets
internal import Synchronization

/// Which VM an inner address belongs to: the VMs' primary IPs and NAT source ranges as sorted
/// disjoint intervals, searched by bisection (no allocation per packet).
struct VMAddressIndex {
  struct Interval {
    var first: UInt32
    var last: UInt32
    var vm: Int
  }
  var intervals: [Interval] = []
  var primaries: [IPv4Address] = []
  var ids: [String] = []

  init() {}

  init(_ config: EngineConfig) {
    for (i, vm) in config.vms.enumerated() {
      ids.append(vm.id)
      primaries.append(vm.primaryIP)
      var covered = false
      for r in vm.natSourceRanges {
        intervals.append(Interval(first: r.first.value, last: r.last.value, vm: i))
        if r.contains(vm.primaryIP) { covered = true }
      }
      if !covered { intervals.append(Interval(first: vm.primaryIP.value, last: vm.primaryIP.value, vm: i)) }
    }
    intervals.sort { $0.first < $1.first }
  }

  /// Index of the VM owning `ip`, or -1.
  @inline(__always)
  func vm(for ip: UInt32) -> Int {
    var lo = 0
    var hi = intervals.count
    while lo < hi {
      let mid = (lo + hi) >> 1
      if intervals[mid].first <= ip { lo = mid + 1 } else { hi = mid }
    }
    guard lo > 0 else { return -1 }
    let iv = intervals[lo - 1]
    return ip <= iv.last ? iv.vm : -1
  }
}

/// A NAT log record with the id of its VM resolved.
public struct AgentLogEntry: Sendable, Hashable {
  public var record: LogRecord
  public var vmID: String?
  public init(record: LogRecord, vmID: String?) {
    self.record = record
    self.vmID = vmID
  }
}

/// The host agent's packet loop: Geneve VNI 1 from VMs is translated outbound and sent to the edge
/// with VNI 2; VNI 2 from the edge is translated inbound and sent to the VM's underlay address with
/// VNI 1. Packets between VMs of the VPC are not translated: they go to the edge, which carries
/// the VPC fabric, with the sending network's VPC VNI, and come in from it with the same. One thread runs the loop; the engine and every counter sit behind one lock that the loop
/// takes once per batch, so `apply` and `stats` from other threads land between batches (a packet
/// sees the old config or the new, never half).
///
/// Until a config is applied (at init or with `apply`) packets are dropped and the engine is not
/// swept: a table attached from an earlier run must not be judged against an empty config.
public final class AgentDataplane: Sendable {
  struct State {
    var engine: NATEngine
    let region: FlowRegion?
    var appliedVersion: UInt64?
    private(set) var index = VMAddressIndex()
    /// VM underlay addresses by the VM's primary IP (survives config changes that keep the IP).
    private(set) var underlays: [IPv4Address: SocketAddress] = [:]
    /// The same addresses by VM index of `index`, so the packet path reads an array, not a hash.
    private(set) var vmUnderlays: [SocketAddress?] = []
    /// Fabric tag of each VM's network (0: none), by VM index of `index`.
    private(set) var vmFabricIDs: [UInt32] = []
    var edge: SocketAddress?
    var loop = AgentLoopCounters()
    var clock = MonotonicClamp()
    var nextSweep: UInt64 = 0

    mutating func setIndex(_ config: EngineConfig) {
      index = VMAddressIndex(config)
      vmUnderlays = index.primaries.map { underlays[$0] }
      vmFabricIDs = config.vms.map { config.networks[$0.network]?.fabricID ?? 0 }
    }

    /// Records that VM `vm` sends from `address` (writes only when it moved).
    @inline(__always)
    mutating func learn(_ address: SocketAddress, vm: Int) {
      guard vmUnderlays[vm] != address else { return }
      vmUnderlays[vm] = address
      underlays[index.primaries[vm]] = address
    }
  }

  public let socket: UDPSocket
  public let batchSize: Int
  /// How often the loop sweeps, and how many slots each sweep visits (a full pass over the table
  /// takes capacity / budget sweeps).
  public let sweepInterval: UInt64 = 10_000_000
  public let sweepBudget: Int
  private let state: Mutex<State>
  private let thread = LoopHandle()

  /// - Parameters:
  ///   - flowRegion: where the flow table lives; nil keeps it on the heap. An attached region's flows
  ///     continue once a config is applied.
  ///   - initialConfig: a config to apply at once (e.g. the last good one from disk), at `initialVersion`.
  public init(
    socket: UDPSocket, capacity: Int, flowRegion: FlowRegion? = nil, initialConfig: EngineConfig? = nil,
    initialVersion: UInt64 = 0, batchSize: Int = 64
  ) throws {
    let engine: NATEngine
    if let region = flowRegion {
      guard region.capacity == capacity else {
        throw FlowRegionError(path: region.path, reason: "region holds \(region.capacity) flows, agent wants \(capacity)")
      }
      engine = try NATEngine(attaching: region.buffer, config: initialConfig ?? EngineConfig())
    } else {
      var rng = SystemRandomNumberGenerator()
      engine = try NATEngine(capacity: capacity, config: initialConfig ?? EngineConfig(), seed: rng.next())
    }
    var st = State(engine: engine, region: flowRegion)
    if let initialConfig {
      st.appliedVersion = initialVersion
      st.setIndex(initialConfig)
    }
    // Wake at least every sweep interval when idle, so sweeps run and `stop` is noticed.
    try socket.setReceiveTimeout(.milliseconds(10))
    self.socket = socket
    self.batchSize = batchSize
    sweepBudget = max(256, capacity / 100)
    state = Mutex(st)
  }

  deinit { stop() }

  // MARK: - Control

  /// Validates and applies `config` between two batches; returns once it is in force. On error the
  /// old config stays.
  public func apply(_ config: EngineConfig, version: UInt64) throws(EngineError) {
    try state.withLock { (st) throws(EngineError) -> Void in
      try st.engine.apply(config, now: st.clock.now())
      st.setIndex(config)
      st.appliedVersion = version
    }
  }

  /// Where Internet-bound packets go (nil: dropped and counted as `noEdge`).
  public func setEdge(_ address: SocketAddress?) {
    state.withLock { $0.edge = address }
  }

  /// Starts the engine's log ring (records drained with `drainLog`); 0 turns logging off.
  public func enableLog(capacity: Int) {
    state.withLock { st in
      st.engine.logSink = capacity > 0 ? LogRing(capacity: capacity) : nil
    }
  }

  /// Takes the pending NAT log records out of the engine.
  public func drainLog() -> [AgentLogEntry] {
    state.withLock { st -> [AgentLogEntry] in
      guard let sink = st.engine.logSink else { return [] }
      return sink.drain().map { AgentLogEntry(record: $0, vmID: $0.vmIndex.flatMap { st.engine.vmID(at: Int($0)) }) }
    }
  }

  public func stats() -> AgentDataplaneStats {
    state.withLock { st -> AgentDataplaneStats in
      var vms: [String: VMStats] = [:]
      var addresses: [String: SocketAddress] = [:]
      for (i, id) in st.index.ids.enumerated() {
        if let c = st.engine.counters(forVM: id) { vms[id] = VMStats(c) }
        if let a = st.vmUnderlays[i] { addresses[id] = a }
      }
      return AgentDataplaneStats(
        appliedVersion: st.appliedVersion, flows: st.engine.flowCount, mappings: st.engine.mappingCount,
        capacity: st.engine.capacity, vms: vms, global: GlobalStats(st.engine.globalCounters), loop: st.loop,
        vmAddresses: addresses, edge: st.edge)
    }
  }

  /// Live flows (allocates; tests and tools).
  public func flows() -> [FlowSnapshot] {
    state.withLock { $0.engine.flows() }
  }

  /// Starts the loop thread (no-op when running). A running loop keeps this object alive: call `stop`.
  public func start() {
    thread.start(name: "hostnat-agent") { [self] thread in run(thread) }
  }

  /// Stops and joins the loop thread (bounded by `timeout`; idempotent). Also flushes the region.
  public func stop(timeout: Duration = .seconds(5)) {
    thread.stop(timeout: timeout)
    state.withLock { $0.region?.flush() }
  }

  // MARK: - Loop

  private func run(_ thread: LoopThread) {
    let batch = PacketBatch(capacity: batchSize)
    var pendingSent: UInt64 = 0
    var pendingErrors: UInt64 = 0
    while !thread.shouldStop {
      let received: Int
      do {
        received = try socket.receive(into: batch)
      } catch {
        // The socket was closed under us: nothing more will arrive.
        break
      }
      let sent = pendingSent
      let errors = pendingErrors
      state.withLock { st in
        st.loop.sent &+= sent
        st.loop.sendErrors &+= errors
        let now = st.clock.now()
        if received > 0 { Self.process(batch, &st, now: now) }
        if st.appliedVersion != nil, now >= st.nextSweep {
          st.engine.sweep(now: now, budget: sweepBudget)
          st.loop.sweeps &+= 1
          st.nextSweep = now &+ sweepInterval
        }
      }
      pendingSent = 0
      pendingErrors = 0
      if batch.count > 0 {
        let r = socket.send(batch)
        pendingSent = UInt64(r.sent)
        pendingErrors = UInt64(r.failed)
        batch.count = 0
      }
    }
    let sent = pendingSent
    let errors = pendingErrors
    state.withLock { st in
      st.loop.sent &+= sent
      st.loop.sendErrors &+= errors
    }
  }

  /// Translates the received datagrams in place and compacts the ones to send to the front of the
  /// batch, their addresses set (`batch.count` becomes the number to send).
  private static func process(_ batch: PacketBatch, _ st: inout State, now: UInt64) {
    let n = batch.count
    st.loop.batches &+= 1
    st.loop.received &+= UInt64(n)
    var out = 0
    guard st.appliedVersion != nil else {
      st.loop.notConfigured &+= UInt64(n)
      batch.count = 0
      return
    }
    let engine = st.engine
    for i in 0..<n {
      let datagram = batch.packet(at: i)
      guard let (vni, headerLength) = Underlay.parse(datagram) else {
        st.loop.malformedUnderlay &+= 1
        continue
      }
      let inner = UnsafeMutableRawBufferPointer(rebasing: datagram[headerLength...])
      if vni == Underlay.overlayVNI {
        var vm = -1
        if let src = InnerPacket.source(inner) {
          vm = st.index.vm(for: src)
          if vm >= 0 { st.learn(batch.address(at: i), vm: vm) }
        }
        let outVNI: UInt32
        switch engine.translateOutbound(inner, now: now) {
        case .forward:
          outVNI = Underlay.internetVNI
        case .forwardInVPC:
          // Another VM of the VPC: untranslated, tagged with the sender's network, to the fabric.
          let id = vm >= 0 ? st.vmFabricIDs[vm] : 0
          guard id != 0 else {
            st.loop.noFabric &+= 1
            continue
          }
          outVNI = Underlay.vpcVNI(network: id)
          st.loop.vpcSent &+= 1
        case .drop:
          st.loop.engineDropsOut &+= 1
          continue
        }
        guard let edge = st.edge else {
          st.loop.noEdge &+= 1
          continue
        }
        Underlay.setVNI(outVNI, in: datagram)
        batch.setAddress(edge, at: i)
      } else if vni == Underlay.internetVNI || Underlay.vpcNetwork(vni) != nil {
        let fromFabric = vni != Underlay.internetVNI
        let verdict = fromFabric ? engine.deliverInVPC(inner, now: now) : engine.translateInbound(inner, now: now)
        guard case .forward = verdict else {
          st.loop.engineDropsIn &+= 1
          continue
        }
        if fromFabric { st.loop.vpcReceived &+= 1 }
        let dst = InnerPacket.destination(inner) ?? 0
        let vm = st.index.vm(for: dst)
        guard vm >= 0, let to = st.vmUnderlays[vm] else {
          st.loop.unknownVM &+= 1
          continue
        }
        Underlay.setVNI(Underlay.overlayVNI, in: datagram)
        batch.setAddress(to, at: i)
      } else {
        st.loop.unknownVNI &+= 1
        continue
      }
      batch.swapAt(i, out)
      out &+= 1
    }
    batch.count = out
  }
}
