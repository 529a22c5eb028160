public import HostnatPackets
internal import Synchronization

/// NAT ports `firstPort ..< firstPort + count` of `natIP` are served by the agent at `host`.
public struct EdgeRoute: Sendable, Hashable {
  public var natIP: IPv4Address
  public var firstPort: UInt16
  public var count: Int
  public var host: SocketAddress

  public init(natIP: IPv4Address, firstPort: UInt16, count: Int, host: SocketAddress) {
    self.natIP = natIP
    self.firstPort = firstPort
    self.count = count
    self.host = host
  }
}

/// Why a route set was refused (the previous one stays in force).
public enum EdgeRouteError: Error, Sendable, Hashable {
  case emptyOrOutOfRange(EdgeRoute)
  case overlapping(EdgeRoute, EdgeRoute)
}

/// Counters of the edge loop.
public struct EdgeDataplaneStats: Codable, Sendable, Hashable {
  /// Datagrams received from agents.
  public var received: UInt64 = 0
  /// Packets sent to an agent (server replies and hairpinned packets).
  public var routed: UInt64 = 0
  /// Packets from an agent addressed to another NAT IP:port we route, sent straight to its owner.
  public var hairpinned: UInt64 = 0
  /// Packets to a NAT IP:port no route owns.
  public var droppedUnowned: UInt64 = 0
  /// Not Geneve/IPv4 with VNI 2, or an emitted packet too big for a datagram.
  public var malformed: UInt64 = 0
  public var sent: UInt64 = 0
  public var sendErrors: UInt64 = 0
  public var ticks: UInt64 = 0
  /// Routed packets by agent address ("127.0.0.1:4001").
  public var perHost: [String: UInt64] = [:]
  public init() {}
}

/// Sorted port ranges keyed by (NAT IP, first port), searched by bisection; 1:1 external IPs by hash.
struct RouteTable {
  var keys: [UInt64] = []
  var ends: [UInt32] = []
  var hostOfRange: [Int] = []
  var external: [UInt32: Int] = [:]
  var hosts: [SocketAddress] = []

  init() {}

  init(_ routes: [EdgeRoute], externalIPs: [IPv4Address: SocketAddress]) throws(EdgeRouteError) {
    var hostIndex: [SocketAddress: Int] = [:]
    func index(_ h: SocketAddress) -> Int {
      if let i = hostIndex[h] { return i }
      hosts.append(h)
      hostIndex[h] = hosts.count - 1
      return hosts.count - 1
    }
    for r in routes where r.count <= 0 || Int(r.firstPort) + r.count > 65_536 {
      throw .emptyOrOutOfRange(r)
    }
    let sorted = routes.sorted { ($0.natIP.value, $0.firstPort) < ($1.natIP.value, $1.firstPort) }
    for (i, r) in sorted.enumerated() {
      if i > 0 {
        let p = sorted[i - 1]
        if p.natIP == r.natIP && Int(p.firstPort) + p.count > Int(r.firstPort) { throw .overlapping(p, r) }
      }
      keys.append(UInt64(r.natIP.value) << 16 | UInt64(r.firstPort))
      ends.append(UInt32(Int(r.firstPort) + r.count))
      hostOfRange.append(index(r.host))
    }
    for (ip, host) in externalIPs.sorted(by: { $0.key < $1.key }) { external[ip.value] = index(host) }
  }

  /// Host index owning `ip:port`, or -1.
  @inline(__always)
  func lookup(ip: UInt32, port: UInt16) -> Int {
    if !external.isEmpty, let h = external[ip] { return h }
    let key = UInt64(ip) << 16 | UInt64(port)
    var lo = 0
    var hi = keys.count
    while lo < hi {
      let mid = (lo + hi) >> 1
      if keys[mid] <= key { lo = mid + 1 } else { hi = mid }
    }
    guard lo > 0 else { return -1 }
    let k = keys[lo - 1]
    return k >> 16 == UInt64(ip) && UInt32(port) < ends[lo - 1] ? hostOfRange[lo - 1] : -1
  }
}

/// Sends a batch when it fills up; used while a loop holds its lock (emit callbacks can produce
/// more packets than one batch holds).
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
}

/// The edge: plays the Internet for every agent. Datagrams from agents (VNI 2) go to `servers`;
/// what the servers emit is routed back to the agent owning the destination NAT IP:port (port
/// ranges from `setRoutes`). A packet from an agent to a routed NAT IP:port (one VM talking to
/// another's NAT address) goes straight to the owner, as the Internet would carry it.
///
/// The servers and counters sit behind one lock, taken once per received batch and per tick.
public final class EdgeDataplane<Servers: PacketEndpoint & SendableMetatype>: Sendable {
  struct State {
    let servers: Servers
    var routes = RouteTable()
    var routedByHost: [UInt64] = []
    var stats = EdgeDataplaneStats()
    var clock = MonotonicClamp()
    var nextTick: UInt64 = 0
  }

  public let socket: UDPSocket
  public let tickInterval: UInt64
  public let batchSize: Int
  private let state: Mutex<State>
  private let thread = Mutex<LoopThread?>(nil)

  public init(socket: UDPSocket, servers: sending Servers, tickInterval: Duration = .milliseconds(10), batchSize: Int = 64) {
    self.socket = socket
    self.tickInterval = UInt64(tickInterval.components.seconds) * 1_000_000_000
      + UInt64(tickInterval.components.attoseconds / 1_000_000_000)
    self.batchSize = batchSize
    // Idle loops wake once per tick interval to run the timers (best effort: keep the socket's own
    // timeout when this fails).
    try? socket.setReceiveTimeout(tickInterval)
    state = Mutex(State(servers: servers))
  }

  deinit { stop() }

  /// Replaces the routing table (atomically, between batches).
  public func setRoutes(_ routes: [EdgeRoute], externalIPs: [IPv4Address: SocketAddress] = [:]) throws(EdgeRouteError) {
    let table = try RouteTable(routes, externalIPs: externalIPs)
    state.withLock { st in
      Self.foldHostCounts(&st)
      st.routes = table
      st.routedByHost = Array(repeating: 0, count: table.hosts.count)
    }
  }

  /// Runs `body` with the servers under the lock (for reading their counters).
  public func withServers<R: Sendable>(_ body: @Sendable (Servers) throws -> R) rethrows -> R {
    try state.withLock { st in try body(st.servers) }
  }

  public func stats() -> EdgeDataplaneStats {
    state.withLock { st -> EdgeDataplaneStats in
      Self.foldHostCounts(&st)
      return st.stats
    }
  }

  public func start() {
    thread.withLock { t in
      guard t == nil else { return }
      t = LoopThread.spawn(name: "hostnat-edge") { [self] thread in run(thread) }
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

  private static func foldHostCounts(_ st: inout State) {
    for (i, n) in st.routedByHost.enumerated() where n > 0 {
      st.stats.perHost[st.routes.hosts[i].description, default: 0] &+= n
      st.routedByHost[i] = 0
    }
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
        let servers = st.servers
        for i in 0..<received {
          let datagram = batch.packet(at: i)
          st.stats.received &+= 1
          guard let (vni, headerLength) = Underlay.parse(datagram), vni == Underlay.internetVNI else {
            st.stats.malformed &+= 1
            continue
          }
          let inner = UnsafeMutableRawBufferPointer(rebasing: datagram[headerLength...])
          guard let dst = InnerPacket.destination(inner) else {
            st.stats.malformed &+= 1
            continue
          }
          if let port = InnerPacket.routingPort(inner) {
            let h = st.routes.lookup(ip: dst, port: port)
            if h >= 0 {
              if out.append(vni: Underlay.internetVNI, inner: UnsafeRawBufferPointer(inner), to: st.routes.hosts[h]) {
                st.stats.routed &+= 1
                st.stats.hairpinned &+= 1
                st.routedByHost[h] &+= 1
              }
              continue
            }
          }
          servers.receive(UnsafeRawBufferPointer(inner), now: now) { reply in Self.route(reply, &st, &out) }
        }
        if now >= st.nextTick {
          st.stats.ticks &+= 1
          st.nextTick = now &+ interval
          servers.tick(now: now) { packet in Self.route(packet, &st, &out) }
        }
        out.flush()
        st.stats.sent &+= out.sent
        st.stats.sendErrors &+= out.failed
      }
    }
  }

  private static func route(_ packet: UnsafeRawBufferPointer, _ st: inout State, _ out: inout BatchSender) {
    let p = UnsafeMutableRawBufferPointer(mutating: packet)  // only read
    guard let dst = InnerPacket.destination(p), let port = InnerPacket.routingPort(p) else {
      st.stats.malformed &+= 1
      return
    }
    let h = st.routes.lookup(ip: dst, port: port)
    guard h >= 0 else {
      st.stats.droppedUnowned &+= 1
      return
    }
    guard out.append(vni: Underlay.internetVNI, inner: packet, to: st.routes.hosts[h]) else {
      st.stats.malformed &+= 1
      return
    }
    st.stats.routed &+= 1
    st.routedByHost[h] &+= 1
  }
}
