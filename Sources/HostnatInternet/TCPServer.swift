import HostnatAddressing
import HostnatPackets

struct ConnectionKey: Hashable {
  var client: UInt32
  var server: UInt32
  var clientPort: UInt16
  var serverPort: UInt16
}

/// One server-side TCP connection (RFC 9293, simplified: no options, no SACK, go-back-N on timeout).
final class ServerConnection {
  enum State { case synReceived, established, closeWait, lastAck, finWait1, finWait2, closing, timeWait }
  enum App { case echo, whoami }

  let key: ConnectionKey
  let app: App
  var state = State.synReceived
  let iss: UInt32
  let irs: UInt32
  var sndUna: UInt32
  var sndNxt: UInt32
  var sndMax: UInt32
  var rcvNxt: UInt32
  var peerWindow: UInt32 = 0
  /// Bytes from `sndUna` on: unacknowledged, then not yet sent.
  var sendBuffer: [UInt8] = []
  /// The application has closed: a FIN follows the buffered data.
  var finQueued = false
  var rto: UInt64
  var retransmitAt: UInt64 = .max
  var retransmits = 0
  var lastActivity: UInt64
  var timeWaitUntil: UInt64 = .max
  var request: [UInt8] = []

  init(key: ConnectionKey, app: App, iss: UInt32, irs: UInt32, now: UInt64, rto: UInt64) {
    self.key = key
    self.app = app
    self.iss = iss
    self.irs = irs
    sndUna = iss
    sndNxt = iss &+ 1
    sndMax = iss &+ 1
    rcvNxt = irs &+ 1
    lastActivity = now
    self.rto = rto
  }

  var dataEnd: UInt32 { sndUna &+ UInt32(sendBuffer.count) }
  /// Our FIN has been sent and acknowledged.
  var finAcknowledged = false
}

extension InternetServers {
  func handleTCP(_ ip: IPv4PacketView, offered: UInt8, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    guard let tcp = try? TCPHeaderView(validating: ip.payload), tcp.checksumIsValid(pseudoHeaderSum: ip.pseudoHeaderSum)
    else {
      counters.malformed += 1
      return
    }
    let flags = tcp.flags
    let payload = UnsafeRawBufferPointer(rebasing: tcp.bytes[tcp.headerLength...])
    let key = ConnectionKey(
      client: ip.source.value, server: ip.destination.value, clientPort: tcp.sourcePort,
      serverPort: tcp.destinationPort)
    let app: ServerConnection.App
    if key.serverPort == WellKnownPorts.echo, offered & ServiceKind.tcpEcho.bit != 0 {
      app = .echo
    } else if key.serverPort == WellKnownPorts.whoami, offered & ServiceKind.whoami.bit != 0 {
      app = .whoami
    } else {
      counters.noSuchService += 1
      resetFor(key: key, tcp: tcp, payloadCount: payload.count, emit: emit)
      return
    }
    if let conn = connections[key] {
      if flags.contains(.syn), conn.state == .timeWait, !flags.contains(.ack) {
        // A new incarnation of the same 4-tuple (RFC 9293 §3.10.7.4 allows reopening from TIME-WAIT).
        connections[key] = nil
        counters.tcpClosed += 1
      } else {
        segment(conn, tcp: tcp, payload: payload, now: now, emit: emit)
        return
      }
    }
    // LISTEN.
    if flags.contains(.rst) { return }
    if flags.contains(.ack) || !flags.contains(.syn) {
      resetFor(key: key, tcp: tcp, payloadCount: payload.count, emit: emit)
      return
    }
    guard connections.count < config.maxConnections else {
      counters.tcpTableFull += 1
      resetFor(key: key, tcp: tcp, payloadCount: payload.count, emit: emit)
      return
    }
    let conn = ServerConnection(
      key: key, app: app, iss: UInt32(truncatingIfNeeded: rng.next()), irs: tcp.sequenceNumber, now: now,
      rto: config.initialRTO)
    conn.peerWindow = UInt32(tcp.window)
    connections[key] = conn
    counters.tcpAccepted += 1
    counters.tcpConnections = connections.count
    sendSegment(conn, sequence: conn.iss, flags: [.syn, .ack], emit: emit)
    arm(conn, now)
  }

  /// RST for a segment that belongs to no connection (RFC 9293 §3.10.7.1).
  private func resetFor(key: ConnectionKey, tcp: TCPHeaderView, payloadCount: Int, emit: (UnsafeRawBufferPointer) -> Void) {
    let flags = tcp.flags
    if flags.contains(.rst) { return }
    counters.tcpResets += 1
    let packet: UnsafeRawBufferPointer
    if flags.contains(.ack) {
      packet = scratch.tcp(
        source: IPv4Address(key.server), destination: IPv4Address(key.client), sourcePort: key.serverPort,
        destinationPort: key.clientPort, sequence: tcp.acknowledgmentNumber, acknowledgment: 0, flags: .rst, window: 0,
        payloadCount: 0)
    } else {
      var length = UInt32(payloadCount)
      if flags.contains(.syn) { length &+= 1 }
      if flags.contains(.fin) { length &+= 1 }
      packet = scratch.tcp(
        source: IPv4Address(key.server), destination: IPv4Address(key.client), sourcePort: key.serverPort,
        destinationPort: key.clientPort, sequence: 0, acknowledgment: tcp.sequenceNumber &+ length,
        flags: [.rst, .ack], window: 0, payloadCount: 0)
    }
    send(packet, emit)
  }

  private func sendSegment(
    _ conn: ServerConnection, sequence: UInt32, flags: TCPFlags, dataOffset: Int = 0, dataCount: Int = 0,
    emit: (UnsafeRawBufferPointer) -> Void
  ) {
    if dataCount > 0 {
      conn.sendBuffer.withUnsafeBytes {
        _ = scratch.copy(UnsafeRawBufferPointer(rebasing: $0[dataOffset..<dataOffset + dataCount]), to: PacketScratch.tcpPayloadOffset)
      }
    }
    let room = max(0, config.sendBufferLimit - conn.sendBuffer.count)
    let packet = scratch.tcp(
      source: IPv4Address(conn.key.server), destination: IPv4Address(conn.key.client), sourcePort: conn.key.serverPort,
      destinationPort: conn.key.clientPort, sequence: sequence, acknowledgment: conn.rcvNxt, flags: flags,
      window: UInt16(min(room, 65_535)), payloadCount: dataCount)
    send(packet, emit)
  }

  private func arm(_ conn: ServerConnection, _ now: UInt64) {
    conn.retransmitAt = now &+ conn.rto
    nextDeadline = min(nextDeadline, conn.retransmitAt)
  }

  private func close(_ conn: ServerConnection) {
    connections[conn.key] = nil
    counters.tcpClosed += 1
    counters.tcpConnections = connections.count
  }

  /// Sends new data and a queued FIN as the peer's window allows; returns whether anything went out.
  @discardableResult
  private func transmit(_ conn: ServerConnection, now: UInt64, force: Bool = false, emit: (UnsafeRawBufferPointer) -> Void) -> Bool {
    var sent = false
    let dataEnd = conn.dataEnd
    // A zero window is probed by the retransmission timer with one segment.
    let window = force ? max(conn.peerWindow, 1) : conn.peerWindow
    let windowEnd = conn.sndUna &+ window
    var segments = 0
    while seqLT(conn.sndNxt, dataEnd), seqLT(conn.sndNxt, windowEnd), segments < 64 {
      let offset = Int(conn.sndNxt &- conn.sndUna)
      let count = min(Int(dataEnd &- conn.sndNxt), Int(windowEnd &- conn.sndNxt), config.mss)
      sendSegment(conn, sequence: conn.sndNxt, flags: [.ack, .psh], dataOffset: offset, dataCount: count, emit: emit)
      conn.sndNxt &+= UInt32(count)
      segments += 1
      sent = true
    }
    if conn.finQueued, conn.sndNxt == dataEnd, !conn.finAcknowledged {
      sendSegment(conn, sequence: conn.sndNxt, flags: [.fin, .ack], emit: emit)
      conn.sndNxt &+= 1
      sent = true
      if conn.state == .established { conn.state = .finWait1 }
      if conn.state == .closeWait { conn.state = .lastAck }
    }
    if seqGT(conn.sndNxt, conn.sndMax) { conn.sndMax = conn.sndNxt }
    if sent, conn.retransmitAt == .max { arm(conn, now) }
    return sent
  }

  private func segment(
    _ conn: ServerConnection, tcp: TCPHeaderView, payload: UnsafeRawBufferPointer, now: UInt64,
    emit: (UnsafeRawBufferPointer) -> Void
  ) {
    let flags = tcp.flags
    let seq = tcp.sequenceNumber
    conn.lastActivity = now
    if flags.contains(.rst) {
      // Only an in-window RST is believed (RFC 5961 §3): a blind one must hit the window.
      let offset = seq &- conn.rcvNxt
      if offset < 65_535 {
        counters.tcpResetByPeer += 1
        close(conn)
      }
      return
    }
    if flags.contains(.syn) {
      if conn.state == .synReceived, seq == conn.irs {
        counters.tcpRetransmits += 1
        sendSegment(conn, sequence: conn.iss, flags: [.syn, .ack], emit: emit)
      } else {
        // Challenge ACK (RFC 5961 §4): a peer that really restarted answers it with an RST.
        sendSegment(conn, sequence: conn.sndNxt, flags: .ack, emit: emit)
      }
      return
    }
    guard flags.contains(.ack) else { return }
    let ack = tcp.acknowledgmentNumber
    if conn.state == .synReceived {
      guard ack == conn.iss &+ 1 else {
        counters.tcpResets += 1
        send(
          scratch.tcp(
            source: IPv4Address(conn.key.server), destination: IPv4Address(conn.key.client),
            sourcePort: conn.key.serverPort, destinationPort: conn.key.clientPort, sequence: ack, acknowledgment: 0,
            flags: .rst, window: 0, payloadCount: 0), emit)
        return
      }
      conn.state = .established
      conn.sndUna = ack
      conn.retransmitAt = .max
      conn.retransmits = 0
      conn.rto = config.initialRTO
    } else if seqGT(ack, conn.sndMax) {
      sendSegment(conn, sequence: conn.sndNxt, flags: .ack, emit: emit)
      return
    } else if seqGT(ack, conn.sndUna) {
      let acked = Int(ack &- conn.sndUna)
      let dataAcked = min(acked, conn.sendBuffer.count)
      conn.sendBuffer.removeFirst(dataAcked)
      if acked > dataAcked { conn.finAcknowledged = true }
      conn.sndUna = ack
      if seqLT(conn.sndNxt, ack) { conn.sndNxt = ack }
      conn.retransmits = 0
      conn.rto = config.initialRTO
      conn.retransmitAt = .max
      if conn.sndUna != conn.sndMax { arm(conn, now) }
    }
    conn.peerWindow = UInt32(tcp.window)

    var needAck = false
    if !payload.isEmpty {
      let end = seq &+ UInt32(payload.count)
      if seqLE(seq, conn.rcvNxt), seqGT(end, conn.rcvNxt) {
        switch conn.state {
        case .established, .finWait1, .finWait2:
          let skip = Int(conn.rcvNxt &- seq)
          var fresh = UnsafeRawBufferPointer(rebasing: payload[skip...])
          if conn.app == .echo {
            // Accept only what the buffer can hold; the peer retransmits the rest.
            let room = max(0, config.sendBufferLimit - conn.sendBuffer.count)
            fresh = UnsafeRawBufferPointer(rebasing: fresh[0..<min(fresh.count, room)])
            if conn.finQueued { fresh = UnsafeRawBufferPointer(rebasing: fresh[0..<0]) }
            conn.sendBuffer.append(contentsOf: fresh)
            counters.tcpBytesEchoed += fresh.count
          } else {
            whoami(conn, data: fresh)
          }
          conn.rcvNxt &+= UInt32(fresh.count)
        default:
          break  // data after the peer's FIN: nothing to deliver
        }
      } else if seqGT(seq, conn.rcvNxt) {
        counters.tcpOutOfOrder += 1
      }
      needAck = true
    }
    if flags.contains(.fin) {
      let finSeq = seq &+ UInt32(payload.count)
      if finSeq == conn.rcvNxt {
        switch conn.state {
        case .established:
          conn.rcvNxt &+= 1
          conn.state = .closeWait
          conn.finQueued = true  // both services close once the peer has
        case .finWait1:
          conn.rcvNxt &+= 1
          conn.state = .closing
        case .finWait2:
          conn.rcvNxt &+= 1
          conn.state = .timeWait
          conn.timeWaitUntil = now &+ config.timeWait
          nextDeadline = min(nextDeadline, conn.timeWaitUntil)
        default:
          break
        }
      }
      needAck = true
    }
    if conn.finAcknowledged {
      switch conn.state {
      case .finWait1: conn.state = .finWait2
      case .closing:
        conn.state = .timeWait
        conn.timeWaitUntil = now &+ config.timeWait
        nextDeadline = min(nextDeadline, conn.timeWaitUntil)
      case .lastAck:
        close(conn)
        return
      default: break
      }
    }
    let sent = conn.state == .timeWait ? false : transmit(conn, now: now, emit: emit)
    if needAck, !sent { sendSegment(conn, sequence: conn.sndNxt, flags: .ack, emit: emit) }
  }

  private func whoami(_ conn: ServerConnection, data: UnsafeRawBufferPointer) {
    guard !conn.finQueued else { return }
    conn.request.append(contentsOf: data)
    let r = conn.request
    var complete = false
    if r.count >= 2 {
      for i in 1..<r.count where r[i] == 10 && (r[i - 1] == 10 || (i >= 3 && r[i - 1] == 13 && r[i - 2] == 10)) {
        complete = true
        break
      }
    }
    let tooLong = r.count > 8_192
    guard complete || tooLong else { return }
    let response: String
    if !tooLong, r.starts(with: "GET ".utf8) {
      let body = "\(IPv4Address(conn.key.client)):\(conn.key.clientPort)\n"
      response =
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        + body
    } else {
      response = "HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    }
    counters.whoamiReplies += 1
    conn.sendBuffer.append(contentsOf: response.utf8)
    conn.finQueued = true
    conn.request = []
  }

  public func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    guard now >= nextDeadline else { return }
    var next = UInt64.max
    due.removeAll(keepingCapacity: true)
    for (key, conn) in connections {
      let deadline = conn.state == .timeWait
        ? conn.timeWaitUntil : min(conn.retransmitAt, conn.lastActivity &+ config.idleTimeout)
      if now >= deadline { due.append(key) } else { next = min(next, deadline) }
    }
    // Dictionary order differs between instances; act in key order so runs are reproducible.
    due.sort()
    for key in due {
      guard let conn = connections[key] else { continue }
      if conn.state == .timeWait {
        close(conn)
        continue
      }
      if now &- conn.lastActivity >= config.idleTimeout {
        counters.tcpExpired += 1
        close(conn)
        continue
      }
      if conn.retransmits >= config.maxRetransmits {
        counters.tcpResets += 1
        send(
          scratch.tcp(
            source: IPv4Address(conn.key.server), destination: IPv4Address(conn.key.client),
            sourcePort: conn.key.serverPort, destinationPort: conn.key.clientPort, sequence: conn.sndNxt,
            acknowledgment: conn.rcvNxt, flags: [.rst, .ack], window: 0, payloadCount: 0), emit)
        close(conn)
        continue
      }
      conn.retransmits += 1
      conn.rto = min(conn.rto &* 2, config.maxRTO)
      counters.tcpRetransmits += 1
      if conn.state == .synReceived {
        sendSegment(conn, sequence: conn.iss, flags: [.syn, .ack], emit: emit)
      } else {
        conn.sndNxt = conn.sndUna
        conn.retransmitAt = .max
        transmit(conn, now: now, force: true, emit: emit)
      }
      conn.retransmitAt = now &+ conn.rto
      next = min(next, conn.retransmitAt, conn.lastActivity &+ config.idleTimeout)
    }
    counters.tcpConnections = connections.count
    nextDeadline = next
  }
}

extension ConnectionKey: Comparable {
  static func < (a: ConnectionKey, b: ConnectionKey) -> Bool {
    (a.client, a.server, a.clientPort, a.serverPort) < (b.client, b.server, b.clientPort, b.serverPort)
  }
}
