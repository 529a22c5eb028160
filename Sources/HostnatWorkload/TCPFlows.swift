import HostnatAddressing
import HostnatPackets

/// One long-lived echo connection: a write every interval, the echo checked byte for byte,
/// reconnecting (same source port) when it breaks.
final class TCPEchoFlow: Flow {
  var conn: TCPClient? = nil
  var stats = TCPStats()
  var writes = 0
  var lostWrites = 0
  var retiredEchoed: UInt64 = 0
  var retiredSent: UInt64 = 0
  var retiredCorrupt = 0
  var connectionPhase = 0
  static let maxBuffered = 16_384
  var writeSize: Int { max(1, min(spec.payloadBytes, 1_400)) }

  override func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    let w = workload
    if let c = conn {
      if c.tick(now: now, emit: emit) {
        stats.retransmits += 1
        w.phases[w.currentPhase].tcpRetransmits += 1
      }
      if c.resetReceived || (c.isOpen && c.outstanding && now &- c.lastProgress >= w.spec.brokenAfter) {
        if !c.resetReceived { c.reset(emit: emit) }
        if c.establishedAt == nil {
          stats.connectFailures += 1
          w.phases[connectionPhase].connectionsFailed += 1
        } else {
          stats.broken += 1
          w.phases[w.currentPhase].tcpBroken += 1
        }
        retire(c)
      } else if c.state == .closed || c.state == .timeWait {
        retire(c)
      }
    }
    if conn == nil, !w.stopped {
      open(now: now, emit: emit)
    }
    pace(now: now) {
      guard let c = conn, c.state == .established, c.sendBuffer.count < TCPEchoFlow.maxBuffered else { return }
      c.write(writeSize)
      writes += 1
      w.phases[w.currentPhase].sent += 1
      c.transmit(now: now, emit: emit)
    }
    if w.stopped, let c = conn, c.state == .established, !c.outstanding, !c.finQueued {
      c.close()
      c.transmit(now: now, emit: emit)
    }
  }

  private func open(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    let w = workload
    if stats.connectAttempts > 0 { stats.reconnects += 1 }
    stats.connectAttempts += 1
    connectionPhase = w.currentPhase
    w.phases[w.currentPhase].connectionsAttempted += 1
    let c = TCPClient(
      local: w.ip, localPort: spec.sourcePort, remote: spec.server, remotePort: 7,
      iss: UInt32(truncatingIfNeeded: w.rng.next()), salt: UInt8(truncatingIfNeeded: w.rng.next()),
      scratch: w.scratch, now: now)
    conn = c
    c.connect(now: now, emit: emit)
  }

  private func retire(_ c: TCPClient) {
    let unechoed = c.bytesQueued - c.bytesVerified
    lostWrites += Int((unechoed + UInt64(writeSize) - 1) / UInt64(writeSize))
    retiredEchoed += c.bytesVerified
    retiredSent += c.bytesQueued
    retiredCorrupt += c.corruptBytes
    conn = nil
  }

  override func receive(_ packet: Inbound, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    guard let c = conn, let segment = packet.segment else { return }
    let wasEstablished = c.establishedAt != nil
    let before = c.bytesVerified
    c.receive(segment, now: now, emit: emit)
    if !wasEstablished, c.establishedAt != nil { stats.established += 1 }
    let echoedWrites = Int(c.bytesVerified / UInt64(writeSize)) - Int(before / UInt64(writeSize))
    if echoedWrites > 0 { workload.phases[workload.currentPhase].received += echoedWrites }
  }

  override func report(now: UInt64) -> FlowReport {
    var r = FlowReport(id: spec.id, kind: spec.kind)
    var s = stats
    let echoed = retiredEchoed + (conn?.bytesVerified ?? 0)
    s.bytesEchoed = Int(echoed)
    s.bytesSent = Int(retiredSent + (conn?.bytesQueued ?? 0))
    s.corruptBytes = retiredCorrupt + (conn?.corruptBytes ?? 0)
    s.connected = conn?.state == .established
    r.tcp = s
    r.sent = writes
    r.lost = lostWrites
    r.inFlight = conn.map { Int(($0.bytesQueued - $0.bytesVerified + UInt64(writeSize) - 1) / UInt64(writeSize)) } ?? 0
    r.received = writes - r.lost - r.inFlight
    r.corrupt = s.corruptBytes
    r.icmpErrors = icmpErrors
    return r
  }

  override var drained: Bool {
    guard let c = conn else { return true }
    return !c.isOpen || !c.outstanding && c.state != .established
  }
}

/// Short connections at a rate: handshake, one request, its echo, close from both sides.
final class TCPChurnFlow: Flow {
  final class Attempt {
    let conn: TCPClient
    let phase: Int
    var done = false
    var lingerUntil: UInt64 = 0
    init(conn: TCPClient, phase: Int) {
      self.conn = conn
      self.phase = phase
    }
  }
  var active: [Attempt] = []
  var stats = ChurnStats()
  var nextPort: UInt16 = 0
  /// After success the connection lingers in TIME-WAIT this long to re-ACK a repeated FIN.
  static let linger: UInt64 = 1_000_000_000
  static let maxActive = 1_024

  override func matches(proto: UInt8, localPort: UInt16, remote: IPv4Address, remotePort: UInt16) -> Bool {
    proto == IPProtocol.tcp && remote == spec.server && remotePort == 7
      && active.contains { $0.conn.localPort == localPort }
  }

  override func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    let w = workload
    for a in active {
      if a.conn.tick(now: now, emit: emit) {
        stats.retransmits += 1
        w.phases[w.currentPhase].tcpRetransmits += 1
      }
      drive(a, now: now, emit: emit)
    }
    active.removeAll { $0.done && now >= $0.lingerUntil }
    pace(now: now) {
      guard active.count < TCPChurnFlow.maxActive, let port = pickPort() else { return }
      stats.attempted += 1
      w.phases[w.currentPhase].connectionsAttempted += 1
      let c = TCPClient(
        local: w.ip, localPort: port, remote: spec.server, remotePort: 7,
        iss: UInt32(truncatingIfNeeded: w.rng.next()), salt: UInt8(truncatingIfNeeded: w.rng.next()),
        scratch: w.scratch, now: now)
      active.append(Attempt(conn: c, phase: w.currentPhase))
      c.connect(now: now, emit: emit)
    }
  }

  private func pickPort() -> UInt16? {
    let low = workload.spec.ephemeralPortLow
    let high = workload.spec.ephemeralPortHigh
    let span = Int(high - low) + 1
    for _ in 0..<min(span, TCPChurnFlow.maxActive + 1) {
      let port = low + UInt16(Int(nextPort) % span)
      nextPort = UInt16((Int(nextPort) + 1) % span)
      if !active.contains(where: { $0.conn.localPort == port }) { return port }
    }
    return nil
  }

  private func drive(_ a: Attempt, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    guard !a.done else { return }
    let c = a.conn
    let w = workload
    if c.resetReceived {
      finish(a, failed: true, now: now)
      stats.reset += 1
    } else if c.completed, c.bytesQueued > 0, c.corruptBytes == 0 {
      stats.succeeded += 1
      a.done = true
      a.lingerUntil = now &+ TCPChurnFlow.linger
    } else if now &- c.openedAt >= w.spec.churnTimeout {
      c.reset(emit: emit)
      finish(a, failed: true, now: now)
    } else if c.state == .established, c.bytesQueued == 0 {
      c.write(max(1, min(spec.payloadBytes, 1_400)))
      c.transmit(now: now, emit: emit)
    } else if c.state == .established || c.state == .closeWait, c.bytesQueued > 0, c.bytesVerified == c.bytesQueued,
      !c.finQueued
    {
      c.close()
      c.transmit(now: now, emit: emit)
    }
  }

  private func finish(_ a: Attempt, failed: Bool, now: UInt64) {
    a.done = true
    a.lingerUntil = now
    if failed {
      stats.failed += 1
      workload.phases[a.phase].connectionsFailed += 1
    }
  }

  override func receive(_ packet: Inbound, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    guard let segment = packet.segment, let a = active.first(where: { $0.conn.localPort == packet.localPort }) else {
      return
    }
    a.conn.receive(segment, now: now, emit: emit)
    drive(a, now: now, emit: emit)
    // A completed connection takes one more look: the close it just finished may be the success.
    drive(a, now: now, emit: emit)
  }

  override func report(now: UInt64) -> FlowReport {
    var r = FlowReport(id: spec.id, kind: spec.kind)
    var s = stats
    s.active = active.count { !$0.done }
    r.churn = s
    r.sent = s.attempted
    r.received = s.succeeded
    r.lost = s.failed
    r.inFlight = s.active
    r.icmpErrors = icmpErrors
    return r
  }

  override var drained: Bool { !active.contains { !$0.done } }
}
