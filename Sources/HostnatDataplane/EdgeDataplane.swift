public import HostnatAddressing
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

/// In the VPC fabric, packets of network `networkID` to `destination` go to the agent at `host`
/// (the host of the VM that owns the destination).
public struct VPCFabricRoute: Sendable, Hashable {
  public var networkID: UInt32
  public var destination: IPv4CIDR
  public var host: SocketAddress

  public init(networkID: UInt32, destination: IPv4CIDR, host: SocketAddress) {
    self.networkID = networkID
    self.destination = destination
    self.host = host
  }
}

/// Why a route set was refused (the previous one stays in force).
public enum EdgeRouteError: Error, Sendable, Hashable {
  case emptyOrOutOfRange(EdgeRoute)
  case overlapping(EdgeRoute, EdgeRoute)
  case overlappingInVPC(VPCFabricRoute, VPCFabricRoute)
  case badFabricID(VPCFabricRoute)
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
  /// Packets from an agent to an address that is neither an emulated server nor a routed NAT
  /// IP:port, forwarded to the uplink (only while an uplink is set).
  public var uplinkForwarded: UInt64 = 0
  /// Datagrams received from the uplink (each is routed like a server reply: to the agent owning
  /// its destination NAT IP:port, or counted in `droppedUnowned`).
  public var uplinkReceived: UInt64 = 0
  /// Packets from direct clients (sources in the direct-client ranges: serverless platforms
  /// talking to the Internet without a VPC), and replies sent back to them.
  public var directClientPackets: UInt64 = 0
  public var directClientReplies: UInt64 = 0
  /// VM-to-VM packets carried by the VPC fabric to their destination's host, and those whose
  /// destination no VM of the sending network (or its peers) owns.
  public var vpcRouted: UInt64 = 0
  public var vpcUnrouted: UInt64 = 0
  /// Packets from an agent whose source NAT IP:port (1:1 or Private Google Access IP, or for a
  /// later fragment the NAT IP) the sending host does not own by the routes in force: dropped
  /// (R5, NOT_OWNER). With no routes pushed yet, every agent packet to the Internet lands here.
  public var droppedNotOwner: UInt64 = 0
  /// Agent packets the wire ownership recorder could not record (its key or interval limits).
  public var ownershipRecorderOverflow: UInt64 = 0
  public init() {}

  /// Missing keys read as zero, so status files written before a counter existed still decode.
  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    func count(_ key: CodingKeys) throws -> UInt64 { try c.decodeIfPresent(UInt64.self, forKey: key) ?? 0 }
    received = try count(.received)
    routed = try count(.routed)
    hairpinned = try count(.hairpinned)
    droppedUnowned = try count(.droppedUnowned)
    malformed = try count(.malformed)
    sent = try count(.sent)
    sendErrors = try count(.sendErrors)
    ticks = try count(.ticks)
    perHost = try c.decodeIfPresent([String: UInt64].self, forKey: .perHost) ?? [:]
    uplinkForwarded = try count(.uplinkForwarded)
    uplinkReceived = try count(.uplinkReceived)
    directClientPackets = try count(.directClientPackets)
    directClientReplies = try count(.directClientReplies)
    vpcRouted = try count(.vpcRouted)
    vpcUnrouted = try count(.vpcUnrouted)
    droppedNotOwner = try count(.droppedNotOwner)
    ownershipRecorderOverflow = try count(.ownershipRecorderOverflow)
  }
}

/// Sorted port ranges keyed by (NAT IP, first port), searched by bisection; 1:1 external IPs by hash.
struct RouteTable {
  var keys: [UInt64] = []
  var ends: [UInt32] = []
  var hostOfRange: [Int] = []
  var external: [UInt32: Int] = [:]
  var hosts: [SocketAddress] = []
  /// (NAT IP << 32 | host index) of every host owning a block on that IP, sorted and unique: the
  /// edge fence's check for later fragments, which carry no port.
  var ipOwners: [UInt64] = []
  /// Which table this is (host indexes mean nothing across tables); set by `setRoutes`.
  var generation: UInt64 = 0

  init() {}

  /// The VPC fabric: (fabric id << 32 | first address) sorted, the last address and host of each.
  var fabricKeys: [UInt64] = []
  var fabricLast: [UInt32] = []
  var fabricHost: [Int] = []

  init(_ routes: [EdgeRoute], externalIPs: [IPv4Address: SocketAddress], fabric: [VPCFabricRoute] = []) throws(EdgeRouteError) {
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
    ipOwners = Array(Set(zip(keys, hostOfRange).map { key, host in (key >> 16) << 32 | UInt64(host) })).sorted()
    for (ip, host) in externalIPs.sorted(by: { $0.key < $1.key }) { external[ip.value] = index(host) }
    for r in fabric where r.networkID == 0 || r.networkID > Underlay.maxFabricID { throw .badFabricID(r) }
    let inFabric = fabric.sorted { ($0.networkID, $0.destination.first.value) < ($1.networkID, $1.destination.first.value) }
    for (i, r) in inFabric.enumerated() {
      if i > 0 {
        let p = inFabric[i - 1]
        if p.networkID == r.networkID && p.destination.last.value >= r.destination.first.value { throw .overlappingInVPC(p, r) }
      }
      fabricKeys.append(UInt64(r.networkID) << 32 | UInt64(r.destination.first.value))
      fabricLast.append(r.destination.last.value)
      fabricHost.append(index(r.host))
    }
  }

  /// Host index of the VM owning `ip` as network `networkID` sees it, or -1.
  @inline(__always)
  func fabricLookup(networkID: UInt32, ip: UInt32) -> Int {
    let i = Self.lastKey(atOrBelow: UInt64(networkID) << 32 | UInt64(ip), in: fabricKeys)
    guard i >= 0 else { return -1 }
    return fabricKeys[i] >> 32 == UInt64(networkID) && ip <= fabricLast[i] ? fabricHost[i] : -1
  }

  /// Host index owning `ip:port`, or -1.
  @inline(__always)
  func lookup(ip: UInt32, port: UInt16) -> Int {
    if !external.isEmpty, let h = external[ip] { return h }
    let i = Self.lastKey(atOrBelow: UInt64(ip) << 16 | UInt64(port), in: keys)
    guard i >= 0 else { return -1 }
    return keys[i] >> 16 == UInt64(ip) && UInt32(port) < ends[i] ? hostOfRange[i] : -1
  }

  /// Index of the largest of the sorted `keys` that is <= `key`, or -1 (bisection).
  @inline(__always)
  static func lastKey(atOrBelow key: UInt64, in keys: [UInt64]) -> Int {
    var lo = 0
    var hi = keys.count
    while lo < hi {
      let mid = (lo + hi) >> 1
      if keys[mid] <= key { lo = mid + 1 } else { hi = mid }
    }
    return lo - 1
  }
}

/// The edge: plays the Internet for every agent. Datagrams from agents (VNI 2) go to `servers`;
/// what the servers emit is routed back to the agent owning the destination NAT IP:port (port
/// ranges from `setRoutes`). A packet from an agent to a routed NAT IP:port (one VM talking to
/// another's NAT address) goes straight to the owner, as the Internet would carry it.
///
/// With an uplink (`setUplink`, off by default) the edge is also a router to a real Internet: packets
/// from agents to addresses that are none of the emulated servers go to the uplink (Geneve VNI 2,
/// e.g. a TUN bridge into a network namespace whose kernel owns those addresses), and datagrams
/// from the uplink are routed to agents by NAT IP:port, as server replies are.
///
/// The edge also carries the VPC fabric: VM-to-VM packets come tagged with their network's VPC
/// VNI and go to the host of the VM that owns the destination (`setRoutes(fabric:)`).
///
/// The edge fence (R5): an agent's VNI 2 packet goes anywhere (servers, hairpin, uplink) only when
/// the routes give its source (NAT IP:port, 1:1 or Private Google Access IP) to that agent's
/// underlay address; otherwise it is dropped (`droppedNotOwner`). Direct clients and the uplink
/// are not fenced (they hold no NAT addresses); nor is the VPC fabric (not NAT traffic).
///
/// The servers and counters sit behind one lock, taken once per received batch and per tick.
public final class EdgeDataplane<Servers: PacketEndpoint & SendableMetatype>: Sendable {
  struct State: EndpointLoopState {
    static var vni: UInt32 { Underlay.internetVNI }
    static func accepts(_ vni: UInt32) -> Bool { vni == Self.vni || Underlay.vpcNetwork(vni) != nil }
    let servers: Servers
    var routes = RouteTable()
    /// Where packets for non-server addresses go (nil: to the servers, which count them as unknown).
    var uplink: SocketAddress?
    /// Addresses the emulated servers answer (only read while an uplink is set).
    var serverIPs: Set<UInt32> = []
    var routedByHost: [UInt64] = []
    var fragments = FragmentRoutes()
    /// Sources that reach the Internet without a VPC (set with the routes) and where each was
    /// last heard from: their replies go back there.
    var directClients: [IPv4CIDR] = []
    var clients: [UInt32: SocketAddress] = [:]
    var stats = EdgeDataplaneStats()
    /// What hosts tried to send from which source (nil until first enabled; kept when stopped).
    var recorder: WireOwnershipRecorder?
    var recording = false
    var clock = MonotonicClamp()
    var nextTick: UInt64 = 0

    mutating func deliver(
      _ inner: UnsafeMutableRawBufferPointer, vni: UInt32, destination: UInt32, from sender: SocketAddress, now: UInt64,
      _ out: inout BatchSender
    ) {
      if let network = Underlay.vpcNetwork(vni) {
        // The VPC fabric: to the host of the VM owning the destination in the sender's network (or
        // a peer's), untouched and still tagged; never to the servers or the uplink.
        let h = routes.fabricLookup(networkID: network, ip: destination)
        guard h >= 0, out.append(vni: vni, inner: UnsafeRawBufferPointer(inner), to: routes.hosts[h]) else {
          stats.vpcUnrouted &+= 1
          return
        }
        stats.vpcRouted &+= 1
        routedByHost[h] &+= 1
        return
      }
      if let uplink, sender == uplink {
        // The real Internet answering (or calling): route by NAT IP:port like a server reply; never
        // back to the uplink, so nothing can loop.
        stats.uplinkReceived &+= 1
        route(UnsafeRawBufferPointer(inner), &out)
        return
      }
      var directClient = false
      if !directClients.isEmpty, let src = InnerPacket.source(inner), directClients.contains(where: { $0.contains(IPv4Address(src)) }) {
        directClient = true
        stats.directClientPackets &+= 1
        if clients[src] != sender { clients[src] = sender }
      }
      // Direct clients own no NAT address (their source is their own); everyone else must own theirs.
      guard directClient || passesFence(inner, from: sender, now: now) else { return }
      if let port = InnerPacket.routingPort(inner) {
        let h = routes.lookup(ip: destination, port: port)
        if h >= 0 {
          if out.append(vni: Self.vni, inner: UnsafeRawBufferPointer(inner), to: routes.hosts[h]) {
            stats.routed &+= 1
            stats.hairpinned &+= 1
            routedByHost[h] &+= 1
          }
          return
        }
      }
      if let uplink, !serverIPs.contains(destination) {
        if out.append(vni: Self.vni, inner: UnsafeRawBufferPointer(inner), to: uplink) {
          stats.uplinkForwarded &+= 1
        } else {
          stats.malformed &+= 1
        }
        return
      }
      servers.receive(UnsafeRawBufferPointer(inner), now: now) { reply in route(reply, &out) }
    }

    /// R5: an agent's packet goes on only when its sender owns the source by the routes in force
    /// (see `RouteTable.owns`). The recorder, when on, sees every attempt, passed or not.
    @inline(__always)
    private mutating func passesFence(_ inner: UnsafeMutableRawBufferPointer, from sender: SocketAddress, now: UInt64) -> Bool {
      let key = InnerPacket.sourceKey(inner)
      if case .malformed = key {
        stats.malformed &+= 1
        return false
      }
      // The loop checked the IPv4 header's first 20 bytes before calling deliver.
      let source = inner.loadBE32(at: 12)
      let owned = routes.owns(source: source, key, sender: sender)
      if recording {
        if case .port(let port) = key {
          stats.ownershipRecorderOverflow &+= recorder!.record(ip: source, port: port, sender: sender, passed: owned, now: now)
        } else {
          recorder!.unkeyed &+= 1
        }
      }
      if !owned { stats.droppedNotOwner &+= 1 }
      return owned
    }

    mutating func tick(now: UInt64, _ out: inout BatchSender) {
      servers.tick(now: now) { packet in route(packet, &out) }
    }

    private mutating func route(_ packet: UnsafeRawBufferPointer, _ out: inout BatchSender) {
      let p = UnsafeMutableRawBufferPointer(mutating: packet)  // only read
      guard let dst = InnerPacket.destination(p) else {
        stats.malformed &+= 1
        return
      }
      // A non-first fragment has no port: it goes where its datagram's first fragment went.
      if FragmentRoutes.isLaterFragment(p) {
        let h = fragments.lookup(p, generation: routes.generation)
        guard h >= 0, out.append(vni: Self.vni, inner: packet, to: routes.hosts[h]) else {
          stats.droppedUnowned &+= 1
          return
        }
        stats.routed &+= 1
        routedByHost[h] &+= 1
        return
      }
      guard let port = InnerPacket.routingPort(p) else {
        stats.malformed &+= 1
        return
      }
      let h = routes.lookup(ip: dst, port: port)
      guard h >= 0 else {
        if !clients.isEmpty, let client = clients[dst] {
          if out.append(vni: Self.vni, inner: packet, to: client) { stats.directClientReplies &+= 1 }
          return
        }
        stats.droppedUnowned &+= 1
        return
      }
      if FragmentRoutes.isFirstFragment(p) { fragments.remember(p, host: h, generation: routes.generation) }
      guard out.append(vni: Self.vni, inner: packet, to: routes.hosts[h]) else {
        stats.malformed &+= 1
        return
      }
      stats.routed &+= 1
      routedByHost[h] &+= 1
    }

    /// Moves the per-host route counts into `stats.perHost` (keyed by text, so not per packet).
    mutating func foldHostCounts() {
      for (i, n) in routedByHost.enumerated() where n > 0 {
        stats.perHost[routes.hosts[i].description, default: 0] &+= n
        routedByHost[i] = 0
      }
    }
  }

  public let socket: UDPSocket
  public let tickInterval: UInt64
  public let batchSize: Int
  private let state: Mutex<State>
  private let thread = LoopHandle()

  public init(socket: UDPSocket, servers: sending Servers, tickInterval: Duration = .milliseconds(10), batchSize: Int = 64) {
    self.socket = socket
    self.tickInterval = tickInterval.nanoseconds
    self.batchSize = batchSize
    // Idle loops wake once per tick interval to run the timers (best effort: keep the socket's own
    // timeout when this fails).
    try? socket.setReceiveTimeout(tickInterval)
    state = Mutex(State(servers: servers))
  }

  deinit { stop() }

  /// Replaces the routing table (atomically, between batches). The same table is the fence: from
  /// the next batch on, a host may send only from what it routes to it.
  /// `directClients`: source ranges outside every VPC (serverless egress IPs) whose packets the
  /// servers answer back to the underlay address they came from.
  /// `fabric`: the VPC fabric's routes (VM-to-VM packets, by sending network and destination).
  public func setRoutes(
    _ routes: [EdgeRoute], externalIPs: [IPv4Address: SocketAddress] = [:], directClients: [IPv4CIDR] = [],
    fabric: [VPCFabricRoute] = []
  ) throws(EdgeRouteError) {
    var table = try RouteTable(routes, externalIPs: externalIPs, fabric: fabric)
    state.withLock { st in
      st.directClients = directClients
      if directClients.isEmpty { st.clients = [:] }
      st.foldHostCounts()
      table.generation = st.routes.generation &+ 1
      st.routes = table
      st.routedByHost = Array(repeating: 0, count: table.hosts.count)
    }
  }

  /// Sets or clears (nil) the uplink to a real Internet (atomically, between batches). While set,
  /// packets from agents whose destination is none of `serverIPs` and no routed NAT IP:port are sent
  /// to `uplink` as Geneve VNI 2 (`uplinkForwarded`), and datagrams from `uplink` are routed to the
  /// agent owning their destination NAT IP:port (`uplinkReceived`; unowned ones `droppedUnowned`).
  /// With empty `serverIPs` every such packet goes to the uplink.
  public func setUplink(_ uplink: SocketAddress?, serverIPs: Set<IPv4Address> = []) {
    let ips = Set(serverIPs.map(\.value))
    state.withLock { st in
      st.uplink = uplink
      st.serverIPs = uplink == nil ? [] : ips
    }
  }

  /// The uplink in force (nil when off).
  public var uplink: SocketAddress? { state.withLock { $0.uplink } }

  /// Runs `body` with the servers under the lock (for reading their counters).
  public func withServers<R: Sendable>(_ body: @Sendable (Servers) throws -> R) rethrows -> R {
    try state.withLock { st in try body(st.servers) }
  }

  public func stats() -> EdgeDataplaneStats {
    state.withLock { st -> EdgeDataplaneStats in
      st.foldHostCounts()
      return st.stats
    }
  }

  /// Starts or stops the wire ownership recorder (off by default): for every packet an agent sends
  /// to the Internet, before the fence decides, which sender used which source IP:port when (see
  /// `WireOwnershipLog`). Starting while stopped begins a fresh log; starting while running changes
  /// nothing; stopping keeps the log for `ownershipRecord()`.
  ///
  /// Its cost, one dictionary lookup per packet (keyed by IP << 16 | port, no allocation once the
  /// key exists), is why it stays off outside fault-injection runs. Bounded: at most `maxKeys`
  /// source IP:ports and `maxUsesPerKey` intervals each; what does not fit is counted in
  /// `ownershipRecorderOverflow`. Consecutive packets of one sender within `mergeGap` of each other
  /// make one interval.
  public func setOwnershipRecording(
    _ enabled: Bool, mergeGap: Duration = .seconds(1), maxKeys: Int = 262_144, maxUsesPerKey: Int = 64
  ) {
    state.withLock { st in
      guard enabled != st.recording else { return }
      st.recording = enabled
      guard enabled else { return }
      let loopNow = st.clock.now()
      st.recorder = WireOwnershipRecorder(
        mergeGap: mergeGap.nanoseconds, maxKeys: maxKeys, maxUsesPerKey: maxUsesPerKey, loopNow: loopNow, wallNow: DataplaneClock.now())
    }
  }

  /// Whether the wire ownership recorder is running.
  public var isRecordingOwnership: Bool { state.withLock { $0.recording } }

  /// A snapshot of the wire ownership log (empty when the recorder never ran). The copy under the
  /// lock is O(1) (copy-on-write); the loop pays for copying the keys it touches afterwards.
  public func ownershipRecord() -> WireOwnershipLog {
    let recorder = state.withLock { $0.recorder }
    return recorder?.log() ?? WireOwnershipLog(startedUnixMs: 0, entries: [])
  }

  /// Starts the loop thread (no-op when running). A running loop keeps this object alive: call `stop`.
  public func start() {
    thread.start(name: "hostnat-edge") { [self] thread in
      runEndpointLoop(thread, socket: socket, batchSize: batchSize, tickInterval: tickInterval, state: state)
    }
  }

  /// Stops and joins the loop thread (bounded by `timeout`; idempotent).
  public func stop(timeout: Duration = .seconds(5)) { thread.stop(timeout: timeout) }
}

/// Which host each fragmented datagram's first fragment was routed to, so its later fragments
/// (which carry no port) follow it. Direct-mapped by (source, destination, protocol, IP
/// identification) in one array made once: nothing is allocated per packet, a collision only
/// loses the older datagram's remaining fragments, and entries die with the routes they name.
struct FragmentRoutes {
  struct Entry {
    var src: UInt32 = 0
    var dst: UInt32 = 0
    var id: UInt16 = 0
    var proto: UInt8 = 0
    var host: Int32 = -1
    var generation: UInt64 = 0
  }

  static let size = 1024
  private var entries = [Entry](repeating: Entry(), count: FragmentRoutes.size)

  @inline(__always)
  static func isFirstFragment(_ p: UnsafeMutableRawBufferPointer) -> Bool { p.loadBE16(at: 6) & 0x3FFF == 0x2000 }

  @inline(__always)
  static func isLaterFragment(_ p: UnsafeMutableRawBufferPointer) -> Bool { p.count >= 20 && p.loadBE16(at: 6) & 0x1FFF != 0 }

  @inline(__always)
  static func slot(_ p: UnsafeMutableRawBufferPointer) -> (index: Int, entry: Entry) {
    let e = Entry(src: p.loadBE32(at: 12), dst: p.loadBE32(at: 16), id: p.loadBE16(at: 4), proto: p[9])
    var h = UInt64(e.src) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(e.dst) &* 0xC2B2_AE3D_27D4_EB4F
    h ^= (UInt64(e.id) << 8 | UInt64(e.proto)) &* 0x1656_67B1_9E37_79F9
    return (Int(truncatingIfNeeded: h ^ (h >> 31)) & (size - 1), e)
  }

  mutating func remember(_ p: UnsafeMutableRawBufferPointer, host: Int, generation: UInt64) {
    var (i, e) = Self.slot(p)
    e.host = Int32(host)
    e.generation = generation
    entries[i] = e
  }

  /// The host index, or -1.
  func lookup(_ p: UnsafeMutableRawBufferPointer, generation: UInt64) -> Int {
    let (i, key) = Self.slot(p)
    let e = entries[i]
    guard e.host >= 0, e.generation == generation, e.src == key.src, e.dst == key.dst, e.id == key.id, e.proto == key.proto
    else { return -1 }
    return Int(e.host)
  }
}
