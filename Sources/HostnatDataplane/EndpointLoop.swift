import HostnatAddressing
internal import Synchronization

/// Sends a batch when it fills up (emit callbacks can produce more packets than one batch holds),
/// and counts what it sent until the loop takes the counts.
struct BatchSender {
  let socket: UDPSocket
  let batch: PacketBatch
  var sent: UInt64 = 0
  var failed: UInt64 = 0

  mutating func flush() {
    guard batch.count > 0 else { return }
    let r = socket.send(batch)
    sent &+= UInt64(r.sent)
    failed &+= UInt64(r.failed)
    batch.count = 0
  }

  @inline(__always)
  mutating func append(vni: UInt32, inner: UnsafeRawBufferPointer, to address: SocketAddress) -> Bool {
    if batch.isFull { flush() }
    return batch.appendGeneve(vni: vni, inner: inner, to: address)
  }

  /// The send counts since the last call.
  mutating func takeCounts() -> (sent: UInt64, failed: UInt64) {
    defer {
      sent = 0
      failed = 0
    }
    return (sent, failed)
  }
}

/// Counters every endpoint loop keeps.
protocol EndpointLoopStats {
  var received: UInt64 { get set }
  var malformed: UInt64 { get set }
  var sent: UInt64 { get set }
  var sendErrors: UInt64 { get set }
  var ticks: UInt64 { get set }
}

extension EdgeDataplaneStats: EndpointLoopStats {}
extension VMDataplaneStats: EndpointLoopStats {}

/// What sits behind an endpoint loop's lock (the edge's servers, a VM process's workloads): inner
/// packets of one VNI come in, what the endpoints emit goes out as Geneve.
protocol EndpointLoopState {
  associatedtype Stats: EndpointLoopStats
  /// The VNI this loop speaks.
  static var vni: UInt32 { get }
  /// Whether a datagram with `vni` is for this loop (default: `vni` only).
  static func accepts(_ vni: UInt32) -> Bool
  var stats: Stats { get set }
  var clock: MonotonicClamp { get set }
  var nextTick: UInt64 { get set }
  /// One well-formed inner IPv4 packet to `destination`, from the underlay address `sender`.
  mutating func deliver(
    _ inner: UnsafeMutableRawBufferPointer, vni: UInt32, destination: UInt32, from sender: SocketAddress, now: UInt64,
    _ out: inout BatchSender)
  /// The endpoints' timers (every tick interval).
  mutating func tick(now: UInt64, _ out: inout BatchSender)
}

extension EndpointLoopState {
  static func accepts(_ vni: UInt32) -> Bool { vni == Self.vni }
}

/// The edge's and the VM process's loop: the lock is taken once per received batch; what the
/// endpoints emit is sent after it is released (only a batch that fills up mid-way is sent under
/// it), so `stats` and control calls do not wait on sendmmsg. Send counts land at the next batch.
func runEndpointLoop<State: EndpointLoopState>(
  _ thread: LoopThread, socket: UDPSocket, batchSize: Int, tickInterval: UInt64, state: borrowing Mutex<State>
) {
  let batch = PacketBatch(capacity: batchSize)
  var out = BatchSender(socket: socket, batch: PacketBatch(capacity: batchSize))
  while !thread.shouldStop {
    let received: Int
    do {
      received = try socket.receive(into: batch)
    } catch {
      // The socket was closed under us: nothing more will arrive.
      break
    }
    state.withLock { st in
      let (sent, failed) = out.takeCounts()
      st.stats.sent &+= sent
      st.stats.sendErrors &+= failed
      let now = st.clock.now()
      for i in 0..<received {
        let datagram = batch.packet(at: i)
        st.stats.received &+= 1
        guard let (vni, headerLength) = Underlay.parse(datagram), State.accepts(vni) else {
          st.stats.malformed &+= 1
          continue
        }
        let inner = UnsafeMutableRawBufferPointer(rebasing: datagram[headerLength...])
        guard let dst = InnerPacket.destination(inner) else {
          st.stats.malformed &+= 1
          continue
        }
        st.deliver(inner, vni: vni, destination: dst, from: batch.address(at: i), now: now, &out)
      }
      if now >= st.nextTick {
        st.stats.ticks &+= 1
        st.nextTick = now &+ tickInterval
        st.tick(now: now, &out)
      }
    }
    out.flush()
  }
  state.withLock { st in
    let (sent, failed) = out.takeCounts()
    st.stats.sent &+= sent
    st.stats.sendErrors &+= failed
  }
}

extension Duration {
  /// Whole nanoseconds (loops keep their intervals as UInt64 nanoseconds).
  var nanoseconds: UInt64 {
    UInt64(components.seconds) * 1_000_000_000 + UInt64(components.attoseconds / 1_000_000_000)
  }
}
