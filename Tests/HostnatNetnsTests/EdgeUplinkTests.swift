import HostnatAddressing
import Foundation
import HostnatDataplane
import HostnatNetns
import HostnatPackets
import HostnatTestSupport
import Testing

/// Answers UDP at 198.51.100.1 (an emulated server) with the payload reversed; counts everything.
final class OneServer: PacketEndpoint {
  static let address = IPv4Address(198, 51, 100, 1)
  var received = 0
  var unknown = 0

  func receive(_ packet: UnsafeRawBufferPointer, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    received += 1
    guard let p = try? PacketParser.parse(Array(packet)), p.destination == Self.address else {
      unknown += 1
      return
    }
    guard case .udp(let s, let d, _) = p.transport else { return }
    PacketBuilder.udp(source: p.destination, destination: p.source, sourcePort: d, destinationPort: s, payload: [42])
      .withUnsafeBytes { emit($0) }
  }

  func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {}
}

/// An edge with an agent's and an uplink's sockets on loopback; stopped and closed when released.
final class EdgeRig {
  let edgeSocket: UDPSocket
  let agent: UDPSocket
  let uplink: UDPSocket
  let edge: EdgeDataplane<OneServer>

  init() throws {
    edgeSocket = try bindLoopback()
    agent = try bindLoopback()
    uplink = try bindLoopback()
    edge = EdgeDataplane(socket: edgeSocket, servers: OneServer())
  }

  deinit {
    edge.stop()
    [edgeSocket, agent, uplink].forEach { $0.close() }
  }
}

@Suite("Edge uplink (loopback, no root)", .serialized)
struct EdgeUplinkTests {
  @Test("non-server destinations go to the uplink; uplink traffic is routed by NAT IP:port and never looped")
  func uplinkRouting() throws {
    let rig = try EdgeRig()
    let (edgeSocket, agent, uplink, edge) = (rig.edgeSocket, rig.agent, rig.uplink, rig.edge)
    try edge.setRoutes([EdgeRoute(natIP: natIP, firstPort: 1024, count: 64, host: agent.localAddress)])
    #expect(edge.uplink == nil)
    edge.setUplink(uplink.localAddress, serverIPs: [OneServer.address])
    #expect(edge.uplink == uplink.localAddress)
    edge.start()
    let to = edgeSocket.localAddress

    // To an emulated server: answered by it, nothing on the uplink.
    let toServer = PacketBuilder.udp(source: natIP, destination: OneServer.address, sourcePort: 1030, destinationPort: 7, payload: [1])
    try agent.send(Underlay.encapsulate(toServer, vni: Underlay.internetVNI), to: to)
    let reply = try #require(try receiveGeneve(agent))
    #expect(reply.vni == Underlay.internetVNI)
    #expect(try PacketParser.parse(reply.inner).source == OneServer.address)

    // To anything else: forwarded unchanged to the uplink as VNI 2.
    let toInternet = PacketBuilder.udp(source: natIP, destination: inetServer, sourcePort: 1030, destinationPort: 7000, payload: [2, 3])
    try agent.send(Underlay.encapsulate(toInternet, vni: Underlay.internetVNI), to: to)
    let forwarded = try #require(try receiveGeneve(uplink))
    #expect(forwarded.vni == Underlay.internetVNI)
    #expect(forwarded.inner == toInternet)

    // From the uplink to an owned NAT IP:port: routed to the owning agent, unchanged.
    let back = PacketBuilder.udp(source: inetServer, destination: natIP, sourcePort: 7000, destinationPort: 1030, payload: [4])
    try uplink.send(Underlay.encapsulate(back, vni: Underlay.internetVNI), to: to)
    let routed = try #require(try receiveGeneve(agent))
    #expect(routed.inner == back)

    // From the uplink to a port nobody owns, or to a non-NAT address: dropped, not sent back up.
    let unowned = PacketBuilder.udp(source: inetServer, destination: natIP, sourcePort: 7000, destinationPort: 5000, payload: [5])
    let stray = PacketBuilder.udp(source: inetServer, destination: IPv4Address(192, 0, 2, 99), sourcePort: 7000, destinationPort: 1030)
    try uplink.send(Underlay.encapsulate(unowned, vni: Underlay.internetVNI), to: to)
    try uplink.send(Underlay.encapsulate(stray, vni: Underlay.internetVNI), to: to)
    #expect(eventually { edge.stats().droppedUnowned == 2 })
    #expect(try receiveGeneve(uplink, within: .milliseconds(200)) == nil)

    let stats = edge.stats()
    #expect(stats.uplinkForwarded == 1)
    #expect(stats.uplinkReceived == 3)
    #expect(edge.withServers { $0.unknown } == 0)

    // Uplink off: the same packet goes to the servers, which do not know the address.
    edge.setUplink(nil)
    try agent.send(Underlay.encapsulate(toInternet, vni: Underlay.internetVNI), to: to)
    #expect(eventually { edge.withServers { $0.unknown } == 1 })
    #expect(try receiveGeneve(uplink, within: .milliseconds(200)) == nil)
    #expect(edge.stats().uplinkForwarded == 1)
  }

  @Test("with no server IPs every non-routed packet goes up; an off uplink is the default")
  func emptyServerSet() throws {
    let rig = try EdgeRig()
    let (edgeSocket, agent, uplink, edge) = (rig.edgeSocket, rig.agent, rig.uplink, rig.edge)
    // The edge fence forwards only sources the sender owns.
    try edge.setRoutes([EdgeRoute(natIP: natIP, firstPort: 1024, count: 64, host: agent.localAddress)])
    edge.setUplink(uplink.localAddress)
    edge.start()
    let toServer = PacketBuilder.udp(source: natIP, destination: OneServer.address, sourcePort: 1030, destinationPort: 7)
    try agent.send(Underlay.encapsulate(toServer, vni: Underlay.internetVNI), to: edgeSocket.localAddress)
    #expect(try receiveGeneve(uplink)?.inner == toServer)
    #expect(edge.withServers { $0.received } == 0)
  }

  @Test("edge stats decode without the uplink counters (older status files) and round-trip with them")
  func statsDecoding() throws {
    let old = try JSONDecoder().decode(EdgeDataplaneStats.self, from: Data(#"{"received":5,"routed":2,"perHost":{"a":1}}"#.utf8))
    #expect(old.received == 5 && old.routed == 2 && old.uplinkForwarded == 0 && old.perHost == ["a": 1])
    var stats = EdgeDataplaneStats()
    stats.uplinkForwarded = 7
    stats.uplinkReceived = 8
    stats.malformed = 1
    let again = try JSONDecoder().decode(EdgeDataplaneStats.self, from: JSONEncoder().encode(stats))
    #expect(again == stats)
  }

  @Test("a fragmented datagram from the uplink: every fragment reaches the host its first one went to")
  func fragmentsFollowTheirFirst() throws {
    let rig = try EdgeRig()
    let (edgeSocket, agent, uplink, edge) = (rig.edgeSocket, rig.agent, rig.uplink, rig.edge)
    try edge.setRoutes([EdgeRoute(natIP: natIP, firstPort: 1024, count: 64, host: agent.localAddress)])
    edge.setUplink(uplink.localAddress, serverIPs: [OneServer.address])
    edge.start()
    var big = PacketBuilder.udp(
      source: inetServer, destination: natIP, sourcePort: 7000, destinationPort: 1030, payload: [UInt8](repeating: 9, count: 1800),
      identification: 77)
    // DF clear, so it may be split.
    big[6] = 0
    let sum = InternetChecksum.checksum(Array(big[0..<20]).enumerated().map { $0.offset == 10 || $0.offset == 11 ? 0 : $0.element })
    big[10] = UInt8(sum >> 8)
    big[11] = UInt8(sum & 0xFF)
    var pieces: [[UInt8]] = []
    var scratch = [UInt8](repeating: 0, count: 1400)
    let n = big.withUnsafeBytes { p in
      scratch.withUnsafeMutableBytes { s in PathMTU.fragment(p, mtu: 1000, scratch: s) { pieces.append(Array($0)) } }
    }
    #expect(n == 2)
    // A later fragment before its first: nowhere to go.
    try uplink.send(Underlay.encapsulate(pieces[1], vni: Underlay.internetVNI), to: edgeSocket.localAddress)
    #expect(eventually { edge.stats().droppedUnowned == 1 })
    for piece in pieces { try uplink.send(Underlay.encapsulate(piece, vni: Underlay.internetVNI), to: edgeSocket.localAddress) }
    // Both may arrive in one receive batch: collect every datagram.
    var received: [[UInt8]] = []
    let batch = PacketBatch(capacity: 16)
    let deadline = ContinuousClock.now + .seconds(3)
    while received.count < 2 && ContinuousClock.now < deadline {
      _ = try agent.receive(into: batch)
      for (bytes, _) in batch.datagrams() {
        var copy = bytes
        if let inner = copy.withUnsafeMutableBytes({ b in Underlay.parse(b).map { Array(b[$0.headerLength...]) } }) { received.append(inner) }
      }
    }
    #expect(received == pieces)
    // The edge publishes its counters after sending the batch: the agent can hold it first.
    #expect(eventually { edge.stats().routed == 2 }, "\(edge.stats())")
  }
}
