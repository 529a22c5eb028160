public import HostnatAddressing
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

/// Which side of the network workloads sit on: the VNI they speak.
public protocol WorkloadSide: Sendable, SendableMetatype {
  static var vni: UInt32 { get }
}

/// Inside a VPC: VMs behind their host agent (Geneve VNI 1).
public enum VMSide: WorkloadSide {
  public static var vni: UInt32 { Underlay.overlayVNI }
}

/// On the Internet itself, talking to the edge (Geneve VNI 2): e.g. a serverless platform's
/// egress that never enters a VPC.
public enum InternetSide: WorkloadSide {
  public static var vni: UInt32 { Underlay.internetVNI }
}

/// VMs' workloads in one process.
public typealias VMDataplane<W: PacketEndpoint & SendableMetatype> = WorkloadDataplane<W, VMSide>
/// Internet clients' workloads in one process; `agent` is then the edge.
public typealias InternetClientDataplane<W: PacketEndpoint & SendableMetatype> = WorkloadDataplane<W, InternetSide>

/// Several workloads in one process, behind one socket: what they emit goes to their next hop
/// (a host agent, or the edge for `InternetSide`) as Geneve with the side's VNI; datagrams coming
/// back are handed to the workload whose IP is the inner destination. Workloads are ticked every
/// `tickInterval`.
public final class WorkloadDataplane<W: PacketEndpoint & SendableMetatype, Side: WorkloadSide>: Sendable {
  struct State: EndpointLoopState {
    static var vni: UInt32 { Side.vni }
    let workloads: [(ip: IPv4Address, workload: W)]
    let byIP: [UInt32: Int]
    var agent: SocketAddress
    var stats = VMDataplaneStats()
    var clock = MonotonicClamp()
    var nextTick: UInt64 = 0

    mutating func deliver(
      _ inner: UnsafeMutableRawBufferPointer, vni: UInt32, destination: UInt32, from sender: SocketAddress, now: UInt64,
      _ out: inout BatchSender
    ) {
      guard let w = byIP[destination] else {
        stats.unknownDestination &+= 1
        return
      }
      stats.delivered &+= 1
      workloads[w].workload.receive(UnsafeRawBufferPointer(inner), now: now) { packet in emit(packet, &out) }
    }

    mutating func tick(now: UInt64, _ out: inout BatchSender) {
      for (_, workload) in workloads {
        workload.tick(now: now) { packet in emit(packet, &out) }
      }
    }

    private mutating func emit(_ packet: UnsafeRawBufferPointer, _ out: inout BatchSender) {
      if out.append(vni: Self.vni, inner: packet, to: agent) {
        stats.emitted &+= 1
      } else {
        stats.malformed &+= 1
      }
    }
  }

  public let socket: UDPSocket
  public let tickInterval: UInt64
  public let batchSize: Int
  private let state: Mutex<State>
  private let thread = LoopHandle()

  public init(
    socket: UDPSocket, agent: SocketAddress, workloads: sending [(ip: IPv4Address, workload: W)],
    tickInterval: Duration = .milliseconds(5), batchSize: Int = 64
  ) {
    self.socket = socket
    self.tickInterval = tickInterval.nanoseconds
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

  /// Starts the loop thread (no-op when running). A running loop keeps this object alive: call `stop`.
  public func start() {
    thread.start(name: "hostnat-vms") { [self] thread in
      runEndpointLoop(thread, socket: socket, batchSize: batchSize, tickInterval: tickInterval, state: state)
    }
  }

  /// Stops and joins the loop thread (bounded by `timeout`; idempotent).
  public func stop(timeout: Duration = .seconds(5)) { thread.stop(timeout: timeout) }
}
