/// Outstanding requests of a datagram flow, in a fixed ring indexed by sequence number: sending and
/// matching a reply allocate nothing, and losses are found by sweeping from the oldest request.
struct RequestTracker {
  enum State: UInt8 { case empty, inFlight, received, lost, late }
  struct Slot {
    var seq: UInt32 = 0
    var sentAt: UInt64 = 0
    var phase: Int32 = 0
    var state = State.empty
  }
  enum Outcome { case received(phase: Int), late, duplicate, unknown }

  static let size = 4_096
  var slots = [Slot](repeating: Slot(), count: RequestTracker.size)
  var nextSeq: UInt32 = 0
  var oldest: UInt32 = 0
  var sent = 0, received = 0, lost = 0, late = 0, duplicate = 0, inFlight = 0
  var rttSum: UInt64 = 0, rttMax: UInt64 = 0

  @inline(__always) func index(_ seq: UInt32) -> Int { Int(seq % UInt32(RequestTracker.size)) }

  /// Registers a new request and returns its sequence number; `onLost` is told of a request pushed
  /// out of the ring while still outstanding (only at very high rates).
  mutating func send(now: UInt64, phase: Int, onLost: (Int) -> Void) -> UInt32 {
    let seq = nextSeq
    let i = index(seq)
    if slots[i].state == .inFlight {
      markLost(i, onLost)
    }
    slots[i] = Slot(seq: seq, sentAt: now, phase: Int32(phase), state: .inFlight)
    nextSeq &+= 1
    if nextSeq &- oldest > UInt32(RequestTracker.size) { oldest = nextSeq &- UInt32(RequestTracker.size) }
    sent += 1
    inFlight += 1
    return seq
  }

  private mutating func markLost(_ i: Int, _ onLost: (Int) -> Void) {
    slots[i].state = .lost
    lost += 1
    inFlight -= 1
    onLost(Int(slots[i].phase))
  }

  /// A reply for `seq`. One that comes after the loss timeout counts lost and late.
  mutating func reply(seq: UInt32, now: UInt64, timeout: UInt64, onLost: (Int) -> Void) -> Outcome {
    let age = nextSeq &- seq
    if age == 0 || age > (1 << 31) { return .unknown }
    if age > UInt32(RequestTracker.size) { return .late }
    let i = index(seq)
    guard slots[i].seq == seq else { return .late }
    switch slots[i].state {
    case .inFlight:
      let rtt = now &- slots[i].sentAt
      if rtt > timeout {
        markLost(i, onLost)
        slots[i].state = .late
        late += 1
        return .late
      }
      slots[i].state = .received
      received += 1
      inFlight -= 1
      rttSum &+= rtt
      rttMax = max(rttMax, rtt)
      return .received(phase: Int(slots[i].phase))
    case .lost:
      slots[i].state = .late
      late += 1
      return .late
    case .received, .late: 
      duplicate += 1
      return .duplicate
    case .empty:
      return .unknown
    }
  }

  /// A reply that carries no sequence number (whoami, probe): it answers the newest outstanding
  /// request. With RTTs shorter than the send interval that is the right one; matching the oldest
  /// instead would pin each reply on a request that is really lost and shift the loss later.
  mutating func replyNewest(now: UInt64, timeout: UInt64, onLost: (Int) -> Void) -> Outcome {
    var s = nextSeq
    while s != oldest {
      s &-= 1
      if slots[index(s)].seq == s, slots[index(s)].state == .inFlight {
        return reply(seq: s, now: now, timeout: timeout, onLost: onLost)
      }
    }
    return sent > 0 ? .late : .unknown
  }

  /// Counts requests older than `timeout` as lost.
  mutating func expire(now: UInt64, timeout: UInt64, onLost: (Int) -> Void) {
    while oldest != nextSeq {
      let i = index(oldest)
      if slots[i].seq == oldest, slots[i].state == .inFlight {
        guard now &- slots[i].sentAt >= timeout, now >= slots[i].sentAt else { return }
        markLost(i, onLost)
      }
      oldest &+= 1
    }
  }
}
