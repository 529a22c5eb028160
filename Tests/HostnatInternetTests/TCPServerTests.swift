import HostnatAddressing
import HostnatInternet
import HostnatPackets
import Testing

@Suite struct TCPServerTests {
  @Test func handshakeEchoAndCloseFromClient() throws {
    let servers = InternetServers(servers: InternetServers.labDefault)
    var c = TestClient()
    let iss = try c.handshake(servers, now: 0)
    #expect(servers.connectionCount == 1)

    let data = Array("abcdef".utf8)
    let echo = try servers.deliver(c.segment([.ack, .psh], payload: data), now: 1 * ms)
    try #require(echo.count == 1)
    let t = try #require(echo[0].tcp)
    #expect(t.sequence == iss &+ 1)
    #expect(t.acknowledgment == c.seq &+ 6)
    #expect(t.flags.contains(.ack))
    #expect(echo[0].payload == data)
    c.seq &+= 6
    c.ack &+= 6

    // Client closes: the server ACKs our FIN and closes its side in one segment.
    let fin = try servers.deliver(c.segment([.fin, .ack]), now: 2 * ms)
    try #require(fin.count == 1)
    let f = try #require(fin[0].tcp)
    #expect(f.flags == [.fin, .ack])
    #expect(f.acknowledgment == c.seq &+ 1)
    #expect(f.sequence == iss &+ 7)
    c.seq &+= 1
    c.ack &+= 1
    #expect(try servers.deliver(c.segment(.ack), now: 3 * ms).isEmpty)
    #expect(servers.connectionCount == 0)
    #expect(servers.counters.tcpBytesEchoed == 6)
    #expect(servers.counters.tcpClosed == 1)
  }

  @Test func retransmitsUnacknowledgedDataWithBackoffUntilAcked() throws {
    let servers = InternetServers(servers: InternetServers.labDefault)
    var c = TestClient()
    let iss = try c.handshake(servers, now: 0)
    let data = Array("xyz".utf8)
    _ = try servers.deliver(c.segment([.ack, .psh], payload: data), now: 0)
    c.seq &+= 3
    c.ack &+= 3
    #expect(try servers.advance(to: 199 * ms).isEmpty)
    let first = try servers.advance(to: 200 * ms)
    try #require(first.count == 1)
    #expect(first[0].payload == data && first[0].tcp?.sequence == iss &+ 1)
    // Backed off: next one 400 ms later, not 200.
    #expect(try servers.advance(to: 500 * ms).isEmpty)
    let second = try servers.advance(to: 600 * ms)
    #expect(second.count == 1 && second[0].payload == data)
    #expect(servers.counters.tcpRetransmits == 2)
    // The ACK stops the timer.
    #expect(try servers.deliver(c.segment(.ack), now: 610 * ms).isEmpty)
    #expect(try servers.advance(to: 10_000 * ms).isEmpty)
  }

  @Test func outOfOrderAndDuplicateDataIsReAckedNotEchoed() throws {
    let servers = InternetServers(servers: InternetServers.labDefault)
    var c = TestClient()
    _ = try c.handshake(servers, now: 0)
    let ahead = try servers.deliver(c.segment([.ack, .psh], seq: c.seq &+ 10, payload: [1, 2, 3]), now: 0)
    try #require(ahead.count == 1)
    #expect(ahead[0].payload.isEmpty && ahead[0].tcp?.acknowledgment == c.seq)
    #expect(servers.counters.tcpOutOfOrder == 1)
    // In order, then the same again (duplicate): echoed once, the duplicate just re-ACKed.
    let once = try servers.deliver(c.segment([.ack, .psh], payload: [9, 9]), now: 0)
    #expect(once.count == 1 && once[0].payload == [9, 9])
    c.ack &+= 2
    let dup = try servers.deliver(c.segment([.ack, .psh], payload: [9, 9]), now: 0)
    #expect(dup.count == 1 && dup[0].payload.isEmpty && dup[0].tcp?.acknowledgment == c.seq &+ 2)
    // Partly new segment: only the new tail is delivered.
    let overlap = try servers.deliver(c.segment([.ack, .psh], payload: [9, 9, 5]), now: 0)
    #expect(overlap.count == 1 && overlap[0].payload == [5])
    #expect(servers.counters.tcpBytesEchoed == 3)
  }

  @Test func whoamiOverTCPRespondsAndCloses() throws {
    let servers = InternetServers(servers: InternetServers.labDefault)
    var c = TestClient(port: 45_678, serverPort: 80)
    let iss = try c.handshake(servers, now: 0)
    // Request split across two segments.
    let part = try servers.deliver(c.segment([.ack, .psh], payload: Array("GET / HTTP/1.0\r\n".utf8)), now: 0)
    #expect(part.count == 1 && part[0].payload.isEmpty)
    c.seq &+= 16
    let resp = try servers.deliver(c.segment([.ack, .psh], payload: Array("Host: x\r\n\r\n".utf8)), now: 0)
    c.seq &+= 11
    let text = String(decoding: resp.flatMap(\.payload), as: UTF8.self)
    #expect(text.hasPrefix("HTTP/1.0 200 OK\r\n"))
    #expect(text.hasSuffix("\r\n\r\n192.0.2.5:45678\n"))
    let last = try #require(resp.last?.tcp)
    #expect(last.flags.contains(.fin))
    let finSeq = last.sequence
    #expect(finSeq == iss &+ 1 &+ UInt32(text.utf8.count))
    // ACK the FIN, then close our side: the server ends in TIME-WAIT and ACKs our FIN.
    c.ack = finSeq &+ 1
    #expect(try servers.deliver(c.segment(.ack), now: 1 * ms).isEmpty)
    let ackOfFin = try servers.deliver(c.segment([.fin, .ack]), now: 2 * ms)
    #expect(ackOfFin.count == 1 && ackOfFin[0].tcp?.flags == .ack && ackOfFin[0].tcp?.acknowledgment == c.seq &+ 1)
    #expect(servers.connectionCount == 1)
    _ = try servers.advance(to: 20_000 * ms)
    #expect(servers.connectionCount == 0)
    #expect(servers.counters.whoamiReplies == 1)
  }

  @Test func idleConnectionsExpire() throws {
    let servers = InternetServers(servers: InternetServers.labDefault)
    var c = TestClient()
    _ = try c.handshake(servers, now: 0)
    _ = try servers.advance(to: 299_000 * ms)
    #expect(servers.connectionCount == 1)
    _ = try servers.advance(to: 300_001 * ms)
    #expect(servers.connectionCount == 0)
    #expect(servers.counters.tcpExpired == 1)
  }

  @Test func fullTableResetsNewSYNs() throws {
    var config = InternetConfig()
    config.maxConnections = 2
    let servers = InternetServers(servers: InternetServers.labDefault, config: config)
    for port: UInt16 in [1, 2] {
      var c = TestClient(port: port)
      _ = try c.handshake(servers, now: 0)
    }
    let third = try servers.deliver(TestClient(port: 3).segment(.syn), now: 0)
    #expect(third.count == 1 && third[0].tcp?.flags == [.rst, .ack])
    #expect(servers.counters.tcpTableFull == 1)
    #expect(servers.connectionCount == 2)
  }

  @Test func unansweredSynAckGivesUpWithRST() throws {
    let servers = InternetServers(servers: InternetServers.labDefault)
    let c = TestClient()
    _ = try servers.deliver(c.segment(.syn), now: 0)
    var sent: [Reply] = []
    for step in 1...400 { sent += try servers.advance(to: UInt64(step) * 100 * ms) }
    #expect(sent.filter { $0.tcp?.flags == [.syn, .ack] }.count == 8)
    #expect(sent.last?.tcp?.flags.contains(.rst) == true)
    #expect(servers.connectionCount == 0)
  }

  @Test func peerResetClosesOnlyWhenInWindow() throws {
    let servers = InternetServers(servers: InternetServers.labDefault)
    var c = TestClient()
    _ = try c.handshake(servers, now: 0)
    _ = try servers.deliver(c.segment(.rst, seq: c.seq &+ 1_000_000), now: 0)
    #expect(servers.connectionCount == 1)
    _ = try servers.deliver(c.segment(.rst), now: 0)
    #expect(servers.connectionCount == 0)
    #expect(servers.counters.tcpResetByPeer == 1)
  }

  @Test func synToEstablishedConnectionGetsChallengeAck() throws {
    let servers = InternetServers(servers: InternetServers.labDefault)
    var c = TestClient()
    let iss = try c.handshake(servers, now: 0)
    let challenge = try servers.deliver(c.segment(.syn, seq: 99), now: 0)
    #expect(challenge.count == 1 && challenge[0].tcp?.flags == .ack && challenge[0].tcp?.sequence == iss &+ 1)
  }

  @Test func isnsAreSeededAndDeterministic() throws {
    func isn(_ seed: UInt64) throws -> UInt32 {
      var config = InternetConfig()
      config.seed = seed
      var c = TestClient()
      return try c.handshake(InternetServers(servers: InternetServers.labDefault, config: config), now: 0)
    }
    #expect(try isn(1) == isn(1))
    #expect(try isn(1) != isn(2))
  }

  @Test func dataOnTheHandshakeAckIsEchoed() throws {
    let servers = InternetServers(servers: InternetServers.labDefault)
    var c = TestClient()
    let synAck = try #require(try servers.deliver(c.segment(.syn), now: 0).first?.tcp)
    c.seq &+= 1
    c.ack = synAck.sequence &+ 1
    let echo = try servers.deliver(c.segment([.ack, .psh], payload: [1, 2, 3]), now: 0)
    #expect(echo.count == 1 && echo[0].payload == [1, 2, 3] && echo[0].tcp?.sequence == synAck.sequence &+ 1)
  }

  @Test func badAckInSynReceivedIsReset() throws {
    let servers = InternetServers(servers: InternetServers.labDefault)
    var c = TestClient()
    _ = try servers.deliver(c.segment(.syn), now: 0)
    c.seq &+= 1
    let rst = try servers.deliver(c.segment(.ack, ack: 12_345), now: 0)
    #expect(rst.count == 1 && rst[0].tcp?.flags == .rst && rst[0].tcp?.sequence == 12_345)
  }

  @Test func zeroWindowHoldsDataUntilProbeOrOpen() throws {
    let servers = InternetServers(servers: InternetServers.labDefault)
    var c = TestClient()
    _ = try c.handshake(servers, now: 0)
    // The client says its window is closed: the echo waits (only the ACK goes out).
    let zero = PacketBuilder.tcp(
      source: client, destination: serverA, sourcePort: c.port, destinationPort: 7, flags: [.ack, .psh],
      sequence: c.seq, acknowledgment: c.ack, window: 0, payload: [7, 7])
    let held = try servers.deliver(zero, now: 0)
    #expect(held.count == 1 && held[0].payload.isEmpty)
    // A window update releases it.
    c.seq &+= 2
    let open = try servers.deliver(c.segment(.ack), now: 1 * ms)
    #expect(open.count == 1 && open[0].payload == [7, 7])
  }
}
