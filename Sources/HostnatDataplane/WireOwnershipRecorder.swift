import HostnatAddressing

/// The edge's side of `WireOwnershipLog`: per source IP:port, the intervals in which each sender
/// used it. Lives under the edge loop's lock; see `EdgeDataplane.setOwnershipRecording`.
struct WireOwnershipRecorder {
  /// One sender's packets with one fence outcome, none further apart than `mergeGap`.
  struct Use {
    var sender: SocketAddress
    var passed: Bool
    var merged: UInt32 = 0
    var first: UInt64
    var last: UInt64
    var packets: UInt64 = 1
  }

  /// The uses of one IP:port, ordered by `first`, and which one the last packet extended (the
  /// common case is the same sender again).
  struct Key {
    var uses: [Use]
    var latest: Int

    /// Records one packet; returns the packets lost to make room (0 almost always).
    mutating func add(_ sender: SocketAddress, passed: Bool, now: UInt64, mergeGap: UInt64, maxUses: Int) -> UInt64 {
      if uses[latest].sender == sender && uses[latest].passed == passed && now &- uses[latest].last <= mergeGap {
        uses[latest].last = now
        uses[latest].packets &+= 1
        return 0
      }
      // Another sender came between: this sender's own latest use may still be open. Extending it
      // across the other's packets is what makes alternating senders overlap in the log.
      var i = uses.count - 1
      while i >= 0 && !(uses[i].sender == sender && uses[i].passed == passed) { i -= 1 }
      if i >= 0 && now &- uses[i].last <= mergeGap {
        uses[i].last = now
        uses[i].packets &+= 1
        latest = i
        return 0
      }
      var lost: UInt64 = 0
      if uses.count >= maxUses { lost = makeRoom() }
      uses.append(Use(sender: sender, passed: passed, first: now, last: now))
      latest = uses.count - 1
      return lost
    }

    /// Folds the oldest use that has a later one of the same sender and outcome into it: the
    /// merged interval only grows, so the checker can report more (marked inexact), never less.
    /// Merging two different senders would misattribute packets, so when every use has a distinct
    /// sender the oldest is dropped and its packets counted as lost.
    mutating func makeRoom() -> UInt64 {
      for i in 0..<uses.count {
        for j in (i + 1)..<uses.count where uses[j].sender == uses[i].sender && uses[j].passed == uses[i].passed {
          uses[i].last = max(uses[i].last, uses[j].last)
          uses[i].packets &+= uses[j].packets
          uses[i].merged &+= 1 &+ uses[j].merged
          uses.remove(at: j)
          if latest == j { latest = i } else if latest > j { latest -= 1 }
          return 0
        }
      }
      let lost = uses[0].packets
      uses.remove(at: 0)
      latest -= 1
      return lost
    }
  }

  let mergeGap: UInt64
  let maxKeys: Int
  let maxUsesPerKey: Int
  /// Wall clock minus the loop's clock when recording started, in ns: the loop's readings plus
  /// this are Unix time. (The loop clock is the clamped CLOCK_REALTIME today, so this is ~0; it
  /// keeps the conversion right should the loop move to a monotonic clock.)
  let wallOffset: Int64
  let startedUnixMs: Int64
  var keys: [UInt64: Key] = [:]
  var overflow: UInt64 = 0
  var unkeyed: UInt64 = 0

  init(mergeGap: UInt64, maxKeys: Int, maxUsesPerKey: Int, loopNow: UInt64, wallNow: UInt64) {
    self.mergeGap = mergeGap
    self.maxKeys = max(0, maxKeys)
    self.maxUsesPerKey = max(1, maxUsesPerKey)
    wallOffset = Int64(bitPattern: wallNow) &- Int64(bitPattern: loopNow)
    startedUnixMs = Int64(bitPattern: wallNow) / 1_000_000
  }

  /// Records one packet from `sender` with source `ip:port`; returns the packets that could not be
  /// recorded (this one, or older ones dropped to make room).
  @inline(__always)
  mutating func record(ip: UInt32, port: UInt16, sender: SocketAddress, passed: Bool, now: UInt64) -> UInt64 {
    let id = UInt64(ip) << 16 | UInt64(port)
    if let lost = keys[id]?.add(sender, passed: passed, now: now, mergeGap: mergeGap, maxUses: maxUsesPerKey) {
      overflow &+= lost
      return lost
    }
    guard keys.count < maxKeys else {
      overflow &+= 1
      return 1
    }
    keys[id] = Key(uses: [Use(sender: sender, passed: passed, first: now, last: now)], latest: 0)
    return 0
  }

  func unixMs(_ t: UInt64) -> Int64 { (Int64(bitPattern: t) &+ wallOffset) / 1_000_000 }

  /// The log, sorted by IP then port (built off the loop's lock: formatting is not cheap).
  func log() -> WireOwnershipLog {
    let entries = keys.sorted { $0.key < $1.key }.map { id, key in
      WireOwnershipLog.Entry(
        natIP: IPv4Address(UInt32(truncatingIfNeeded: id >> 16)).description, port: UInt16(truncatingIfNeeded: id),
        uses: key.uses.map { u in
          WireOwnershipLog.Use(
            sender: u.sender.description, firstMs: unixMs(u.first), lastMs: unixMs(u.last), packets: u.packets, passedFence: u.passed,
            merged: u.merged)
        })
    }
    return WireOwnershipLog(
      startedUnixMs: startedUnixMs, mergeGapMs: Int64(mergeGap / 1_000_000), overflow: overflow, unkeyed: unkeyed, entries: entries)
  }
}
