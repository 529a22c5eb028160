import HostnatAddressing
import HostnatPackets

/// The fields of an inbound TCP segment a client connection needs.
struct InboundSegment {
  var sequence: UInt32
  var acknowledgment: UInt32
  var flags: TCPFlags
  var window: UInt16
  var payload: UnsafeRawBufferPointer
}

/// A client-side TCP connection (RFC 9293, simplified: no options, go-back-N on timeout) whose
/// byte stream is a deterministic pattern, so the echoed stream can be checked byte for byte.
final class TCPClient {
  enum State { case closed, synSent, established, finWait1, finWait2, closing, timeWait, closeWait, lastAck }

  let local: IPv4Address
  let localPort: UInt16
  let remote: IPv4Address
  let remotePort: UInt16
  let scratch: PacketScratch
  let initialRTO: UInt64
  let maxRTO: UInt64
  let salt: UInt8
  var state = State.closed
  let iss: UInt32
  var sndUna: UInt32
  var sndNxt: UInt32
  var sndMax: UInt32
  var rcvNxt: UInt32 = 0
  var peerWindow: UInt32 = 65_535
  /// Bytes from `sndUna` on: unacknowledged, then unsent.
  var sendBuffer: [UInt8] = []
  var finQueued = false
  var finSent = false
  var finAcked = false
  var peerFin = false
  var resetReceived = false
  var rto: UInt64
  var retransmitAt: UInt64 = .max
  var retransmits = 0
  /// Last time the connection moved forward (handshake, new ACK, new data).
  var lastProgress: UInt64
  let openedAt: UInt64
  var bytesQueued: UInt64 = 0
  var bytesVerified: UInt64 = 0
  var corruptBytes = 0
  var establishedAt: UInt64? = nil

  init(
    local: IPv4Address, localPort: UInt16, remote: IPv4Address, remotePort: UInt16, iss: UInt32, salt: UInt8,
    scratch: PacketScratch, now: UInt64, initialRTO: UInt64 = 200_000_000, maxRTO: UInt64 = 2_000_000_000
  ) {
    self.local = local
    self.localPort = localPort
    self.remote = remote
    self.remotePort = remotePort
    self.iss = iss
    self.salt = salt
    self.scratch = scratch
    self.initialRTO = initialRTO
    self.maxRTO = maxRTO
    rto = initialRTO
    sndUna = iss
    sndNxt = iss
    sndMax = iss
    lastProgress = now
    openedAt = now
  }

  @inline(__always) func pattern(_ offset: UInt64) -> UInt8 {
    UInt8(truncatingIfNeeded: offset &* 131 &+ offset >> 8) ^ salt
  }

  var dataEnd: UInt32 { sndUna &+ UInt32(sendBuffer.count) }
  /// Data written but not yet echoed back.
  var outstanding: Bool { bytesVerified < bytesQueued || state == .synSent }
  /// Both directions closed cleanly and every byte came back.
  var completed: Bool { finAcked && peerFin && bytesVerified == bytesQueued }
  var isOpen: Bool { state != .closed && state != .timeWait }

  func connect(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    state = .synSent
    segment(sequence: iss, flags: .syn, emit: emit)
    sndNxt = iss &+ 1
    sndMax = sndNxt
    retransmitAt = now &+ rto
  }

  func write(_ count: Int) {
    for _ in 0..<count {
      sendBuffer.append(pattern(bytesQueued))
      bytesQueued += 1
    }
  }

  func close() { finQueued = true }

  func reset(emit: (UnsafeRawBufferPointer) -> Void) {
    if state != .closed, state != .timeWait {
      segment(sequence: sndNxt, flags: state == .synSent ? .rst : [.rst, .ack], emit: emit)
    }
    state = .closed
    retransmitAt = .max
  }

  private func segment(
    sequence: UInt32, flags: TCPFlags, dataOffset: Int = 0, dataCount: Int = 0, emit: (UnsafeRawBufferPointer) -> Void
  ) {
    if dataCount > 0 {
      sendBuffer.withUnsafeBytes {
        _ = scratch.copy(
          UnsafeRawBufferPointer(rebasing: $0[dataOffset..<dataOffset + dataCount]), to: PacketScratch.tcpPayloadOffset)
      }
    }
    emit(
      scratch.tcp(
        source: local, destination: remote, sourcePort: localPort, destinationPort: remotePort, sequence: sequence,
        acknowledgment: rcvNxt, flags: flags, window: 65_535, payloadCount: dataCount))
  }

  /// Sends unsent data and a queued FIN within the peer's window; returns whether anything went out.
  @discardableResult
  func transmit(now: UInt64, force: Bool = false, emit: (UnsafeRawBufferPointer) -> Void) -> Bool {
    guard state == .established || state == .closeWait || state == .finWait1 || state == .lastAck
      || state == .closing
    else { return false }
    var sent = false
    let end = dataEnd
    let window = force ? max(peerWindow, 1) : peerWindow
    let windowEnd = sndUna &+ window
    var n = 0
    while seqLT(sndNxt, end), seqLT(sndNxt, windowEnd), n < 64 {
      let count = min(Int(end &- sndNxt), Int(windowEnd &- sndNxt), 1_400)
      segment(sequence: sndNxt, flags: [.ack, .psh], dataOffset: Int(sndNxt &- sndUna), dataCount: count, emit: emit)
      sndNxt &+= UInt32(count)
      n += 1
      sent = true
    }
    if finQueued, sndNxt == end, !finAcked {
      segment(sequence: sndNxt, flags: [.fin, .ack], emit: emit)
      sndNxt &+= 1
      finSent = true
      sent = true
      if state == .established { state = .finWait1 }
      if state == .closeWait { state = .lastAck }
    }
    if seqGT(sndNxt, sndMax) { sndMax = sndNxt }
    if sent, retransmitAt == .max { retransmitAt = now &+ rto }
    return sent
  }

  /// Handles a segment of this connection.
  func receive(_ seg: InboundSegment, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    let flags = seg.flags
    if flags.contains(.rst) {
      let valid =
        state == .synSent ? flags.contains(.ack) && seg.acknowledgment == iss &+ 1 : seg.sequence &- rcvNxt < 65_535
      if valid, state != .closed {
        resetReceived = true
        state = .closed
        retransmitAt = .max
      }
      return
    }
    switch state {
    case .closed:
      return
    case .synSent:
      guard flags.contains(.ack) else { return }
      guard seg.acknowledgment == iss &+ 1 else {
        // An ACK for another incarnation (e.g. the server still holds an old connection): reset it
        // so our retransmitted SYN finds a clean slate.
        segment(sequence: seg.acknowledgment, flags: .rst, emit: emit)
        segment(sequence: iss, flags: .syn, emit: emit)
        return
      }
      guard flags.contains(.syn) else { return }
      rcvNxt = seg.sequence &+ 1
      sndUna = seg.acknowledgment
      peerWindow = UInt32(seg.window)
      state = .established
      establishedAt = now
      lastProgress = now
      rto = initialRTO
      retransmitAt = .max
      if !transmit(now: now, emit: emit) { segment(sequence: sndNxt, flags: .ack, emit: emit) }
      return
    default:
      break
    }
    if flags.contains(.syn) {
      // Our ACK of the SYN-ACK was lost and the server repeats it.
      segment(sequence: sndNxt, flags: .ack, emit: emit)
      return
    }
    guard flags.contains(.ack) else { return }
    let ack = seg.acknowledgment
    if seqGT(ack, sndMax) {
      segment(sequence: sndNxt, flags: .ack, emit: emit)
      return
    }
    if seqGT(ack, sndUna) {
      let acked = Int(ack &- sndUna)
      let dataAcked = min(acked, sendBuffer.count)
      sendBuffer.removeFirst(dataAcked)
      if acked > dataAcked, finQueued { finAcked = true }
      sndUna = ack
      if seqLT(sndNxt, ack) { sndNxt = ack }
      rto = initialRTO
      retransmitAt = sndUna == sndMax ? .max : now &+ rto
      lastProgress = now
    }
    peerWindow = UInt32(seg.window)
    var needAck = false
    let payload = seg.payload
    if !payload.isEmpty {
      let end = seg.sequence &+ UInt32(payload.count)
      if seqLE(seg.sequence, rcvNxt), seqGT(end, rcvNxt), !peerFin {
        let skip = Int(rcvNxt &- seg.sequence)
        for i in skip..<payload.count {
          if payload[i] != pattern(bytesVerified) { corruptBytes += 1 }
          bytesVerified += 1
        }
        rcvNxt = end
        lastProgress = now
      }
      needAck = true
    }
    if flags.contains(.fin) {
      if seg.sequence &+ UInt32(payload.count) == rcvNxt, !peerFin {
        rcvNxt &+= 1
        peerFin = true
        switch state {
        case .established: state = .closeWait
        case .finWait1: state = .closing
        case .finWait2: state = .timeWait
        default: break
        }
      }
      needAck = true
    }
    if finAcked {
      switch state {
      case .finWait1: state = .finWait2
      case .closing: state = .timeWait
      case .lastAck: state = .closed
      default: break
      }
    }
    let sent = transmit(now: now, emit: emit)
    if needAck, !sent { segment(sequence: sndNxt, flags: .ack, emit: emit) }
  }

  /// Retransmits after the timeout; returns true when it did.
  func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) -> Bool {
    guard now >= retransmitAt, state != .closed, state != .timeWait else { return false }
    retransmits += 1
    rto = min(rto &* 2, maxRTO)
    if state == .synSent {
      segment(sequence: iss, flags: .syn, emit: emit)
    } else {
      sndNxt = sndUna
      if finSent, !finAcked { finSent = false }
      retransmitAt = .max
      transmit(now: now, force: true, emit: emit)
    }
    retransmitAt = now &+ rto
    return true
  }
}
