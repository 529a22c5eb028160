public import HostnatPackets
internal import Synchronization

/// Counters of a VM process's loop.
public struct VMDataplaneStats: Codable, Sendable, Hashable {
  public var received: UInt64 = 0
  /// Packets handed to a workload.
  public var delivered: UInt64 = 0
  /// Inner destination is none of this process's VMs.
  public var unknownDestination: UInt64 = 0
  /// Not Geneve/IPv4 with VNI 1, or an emitted packet too big for a datagram.
  public var malformed: UInt64 = 0
  /// Packets the workloads emitted (all go to the agent).
  public var emitted: UInt64 = 0
  public var sent: UInt64 = 0
  public var sendErrors: UInt64 = 0
  public var ticks: UInt64 = 0
  public init() {}
}

/// Several VMs' workloads in one process, behind one socket: what they emit goes to their host
/// agent as Geneve VNI 1; datagrams from the agent are handed to the workload whose IP is the
/// inner destination. Workloads are ticked every `tickInterval`.
public final class VMDataplane<W: PacketEndpoint & SendableMetatype>: Sendable {
  struct State {
    let workloads: [(ip: IPv4Address, workload: W)]
    let byIP: [UInt32: Int]
    var agent: SocketAddress
    var stats = VMDataplaneStats()
    var clock = MonotonicClamp()
    var nextTick: UInt64 = 0
  }

  public let socket: UDPSocket
  public let tickInterval: UInt64
  public let batchSize: Int
  private let state: Mutex<State>
  private let thread = Mutex<LoopThread?>(nil)

  public init(
    socket: UDPSocket, agent: SocketAddress, workloads: sending [(ip: IPv4Address, workload: W)],
    tickInterval: Duration = .milliseconds(5), batchSize: Int = 64
  ) {
    self.socket = socket
    self.tickInterval = UInt64(tickInterval.components.seconds) * 1_000_000_000
      + UInt64(tickInterval.components.attoseconds / 1_000_000_000)
    self.batchSize = batchSize
    // Idle loops wake once per tick interval to run the timers (best effort: keep the socket's own
    // timeout when this fails).
    try? socket.setReceiveTimeout(tickInterval)
    var byIP: [UInt32: Int] = [:]
    for (i, w) in workloads.enumerated() { byIP[w.ip.value] = i }
    state = Mutex(State(workloads: workloads, byIP: byIP, agent: agent))
  }

  deinit { stop() }

  /// Points the VMs at another agent address (an agent restarted on a new port).
  public func setAgent(_ address: SocketAddress) {
    state.withLock { $0.agent = address }
  }

  /// Runs `body` with the workloads under the lock (for reports).
  public func withWorkloads<R: Sendable>(_ body: @Sendable ([(ip: IPv4Address, workload: W)]) throws -> R) rethrows -> R {
    try state.withLock { st in try body(st.workloads) }
  }

  public func stats() -> VMDataplaneStats { state.withLock { $0.stats } }

  public func start() {
    thread.withLock { t in
      guard t == nil else { return }
      t = LoopThread.spawn(name: "hostnat-vms") { [self] thread in run(thread) }
    }
  }

  public func stop(timeout: Duration = .seconds(5)) {
    let t = thread.withLock { t -> LoopThread? in
      let old = t
      t = nil
      return old
    }
    t?.stop(timeout: timeout)
  }

  private func run(_ thread: LoopThread) {
    let batch = PacketBatch(capacity: batchSize)
    let sender = BatchSender(socket: socket, batch: PacketBatch(capacity: batchSize))
    let interval = tickInterval
    while !thread.shouldStop {
      let received: Int
      do {
        received = try socket.receive(into: batch)
      } catch {
        break
      }
      state.withLock { st in
        var out = sender
        let now = st.clock.now()
        let agent = st.agent
        for i in 0..<received {
          let datagram = batch.packet(at: i)
          st.stats.received &+= 1
          guard let (vni, headerLength) = Underlay.parse(datagram), vni == Underlay.overlayVNI else {
            st.stats.malformed &+= 1
            continue
          }
          let inner = UnsafeMutableRawBufferPointer(rebasing: datagram[headerLength...])
          guard let dst = InnerPacket.destination(inner) else {
            st.stats.malformed &+= 1
            continue
          }
          guard let w = st.byIP[dst] else {
            st.stats.unknownDestination &+= 1
            continue
          }
          st.stats.delivered &+= 1
          st.workloads[w].workload.receive(UnsafeRawBufferPointer(inner), now: now) { packet in
            Self.emit(packet, to: agent, &st.stats, &out)
          }
        }
        if now >= st.nextTick {
          st.stats.ticks &+= 1
          st.nextTick = now &+ interval
          for (_, workload) in st.workloads {
            workload.tick(now: now) { packet in Self.emit(packet, to: agent, &st.stats, &out) }
          }
        }
        out.flush()
        st.stats.sent &+= out.sent
        st.stats.sendErrors &+= out.failed
      }
    }
  }

  private static func emit(
    _ packet: UnsafeRawBufferPointer, to agent: SocketAddress, _ stats: inout VMDataplaneStats, _ out: inout BatchSender
  ) {
    if out.append(vni: Underlay.overlayVNI, inner: packet, to: agent) {
      stats.emitted &+= 1
    } else {
      stats.malformed &+= 1
    }
  }
}
