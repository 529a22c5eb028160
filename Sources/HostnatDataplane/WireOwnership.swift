// The wire ownership log and its checker: pure (no I/O), so the lab can decode a log the edge
// wrote and check it in another process.

/// Which host (underlay address) sent from which source IP:port, and when, as the edge saw it
/// (`EdgeDataplane.ownershipRecord()`). Attempts the fence dropped are in it too: it says what
/// hosts tried to put on the wire, and `Use.passedFence` what actually went on.
public struct WireOwnershipLog: Codable, Sendable, Hashable {
  /// When recording started (Unix ms).
  public var startedUnixMs: Int64
  /// Packets of one sender at most this far apart were merged into one use.
  public var mergeGapMs: Int64
  /// Packets not recorded (key limit, or a key whose interval list was full of distinct senders):
  /// nonzero means the log may miss uses.
  public var overflow: UInt64
  /// Agent packets without a source port (later fragments, portless protocols): not keyed.
  public var unkeyed: UInt64
  /// One per source IP:port, sorted by IP then port.
  public var entries: [Entry]

  public init(startedUnixMs: Int64, mergeGapMs: Int64 = 0, overflow: UInt64 = 0, unkeyed: UInt64 = 0, entries: [Entry]) {
    self.startedUnixMs = startedUnixMs
    self.mergeGapMs = mergeGapMs
    self.overflow = overflow
    self.unkeyed = unkeyed
    self.entries = entries
  }

  /// The uses of one source IP:port.
  public struct Entry: Codable, Sendable, Hashable {
    /// Dotted quad ("203.0.113.10").
    public var natIP: String
    public var port: UInt16
    /// Sorted by `firstMs`.
    public var uses: [Use]

    public init(natIP: String, port: UInt16, uses: [Use]) {
      self.natIP = natIP
      self.port = port
      self.uses = uses
    }

    /// The distinct senders, sorted.
    public var senders: [String] { Array(Set(uses.map(\.sender))).sorted() }
  }

  /// One sender's packets from a source IP:port with one fence outcome, none further apart than
  /// the merge gap.
  public struct Use: Codable, Sendable, Hashable {
    /// Underlay address ("127.0.0.1:40001").
    public var sender: String
    /// First and last packet (Unix ms, inclusive).
    public var firstMs: Int64
    public var lastMs: Int64
    public var packets: UInt64
    /// Whether these packets passed the edge fence (went on the wire) or were dropped as NOT_OWNER.
    public var passedFence: Bool
    /// How many later uses of the same sender were folded into this one when the key's interval
    /// list was full (0: exact; more: the interval may span other senders' uses it never overlapped).
    public var merged: UInt32

    public init(sender: String, firstMs: Int64, lastMs: Int64, packets: UInt64, passedFence: Bool, merged: UInt32 = 0) {
      self.sender = sender
      self.firstMs = firstMs
      self.lastMs = lastMs
      self.packets = packets
      self.passedFence = passedFence
      self.merged = merged
    }
  }

  /// Two senders using one source IP:port at overlapping times.
  public struct Overlap: Codable, Sendable, Hashable {
    public var natIP: String
    public var port: UInt16
    /// The use that started first (ties: as listed in the log), and the other.
    public var a: Use
    public var b: Use
    /// How long both were in use (ms; 0 when they only touch).
    public var overlapMs: Int64

    public var senderA: String { a.sender }
    public var senderB: String { b.sender }
    /// Neither interval was widened by merging, so the overlap is certain, not an artefact.
    public var exact: Bool { a.merged == 0 && b.merged == 0 }
  }

  /// Every pair of uses of the same IP:port by different senders whose intervals overlap by at
  /// least `tolerance` ms: [a1, a2] and [b1, b2] are reported when min(a2, b2) - max(a1, b1) >=
  /// tolerance. With 0 (default) intervals that merely touch count; 1 accepts same-millisecond
  /// handovers; a negative tolerance also reports near misses. `passedOnly`: only uses that went
  /// on the wire (what R5 forbids); otherwise also what the fence dropped (what hosts attempted).
  public func overlaps(tolerance: Int64 = 0, passedOnly: Bool = false) -> [Overlap] {
    var found: [Overlap] = []
    for entry in entries {
      var uses = passedOnly ? entry.uses.filter(\.passedFence) : entry.uses
      guard uses.count > 1 else { continue }
      // Stable, so equal starts keep the log's order.
      uses = uses.enumerated().sorted { ($0.element.firstMs, $0.offset) < ($1.element.firstMs, $1.offset) }.map(\.element)
      for i in 0..<uses.count {
        let a = uses[i]
        for j in (i + 1)..<uses.count {
          let b = uses[j]
          // Starts are sorted: once b starts too late for a, so do all after it.
          if b.firstMs > a.lastMs - tolerance { break }
          guard b.sender != a.sender else { continue }
          let overlap = min(a.lastMs, b.lastMs) - b.firstMs
          if overlap >= tolerance { found.append(Overlap(natIP: entry.natIP, port: entry.port, a: a, b: b, overlapMs: overlap)) }
        }
      }
    }
    return found
  }

  /// What one sender did across the log.
  public struct SenderSummary: Codable, Sendable, Hashable {
    public var sender: String
    /// Source IP:ports it used.
    public var keys: Int
    public var uses: Int
    public var packetsPassed: UInt64
    public var packetsDropped: UInt64
  }

  /// One summary per sender, sorted by sender.
  public func senderSummaries() -> [SenderSummary] {
    var by: [String: SenderSummary] = [:]
    for entry in entries {
      for sender in entry.senders {
        by[sender, default: SenderSummary(sender: sender, keys: 0, uses: 0, packetsPassed: 0, packetsDropped: 0)].keys += 1
      }
      for use in entry.uses {
        by[use.sender]!.uses += 1
        if use.passedFence { by[use.sender]!.packetsPassed += use.packets } else { by[use.sender]!.packetsDropped += use.packets }
      }
    }
    return by.values.sorted { $0.sender < $1.sender }
  }

  /// The entries more than one sender used (at any time): where to look first.
  public var sharedEntries: [Entry] { entries.filter { $0.senders.count > 1 } }
}
