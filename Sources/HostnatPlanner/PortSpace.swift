/// Port arithmetic shared by the planner and its callers.
///
/// A NAT IP offers ports 1024–65535 (64,512 ports; 0–1023 are never used). They are handed out in
/// blocks whose size is a power of two and whose first port is a multiple of that size, so a block
/// never straddles the reserved range and blocks of different sizes nest like a buddy allocator's.
/// That alignment is also why a NAT IP holds 1,008 blocks of 64 ports but only 15 of 4,096: the
/// aligned 4,096-port blocks are 4096–8191 … 61440–65535, and 1024–4095 fits none.
public enum NATPorts {
  public static let firstPort = 1024
  public static let usablePortsPerIp = 65536 - 1024
  /// The largest block: 32768–65535. Larger per-VM totals use several blocks.
  public static let maxBlockSize = 32768
  public static let minBlockSize = 2

  /// Aligned blocks of `size` (a power of two, 2...32768) that one NAT IP can hold.
  public static func blocksPerIp(blockSize size: Int) -> Int {
    precondition(size.nonzeroBitCount == 1 && size >= minBlockSize && size <= maxBlockSize)
    return 65536 / size - (firstPort + size - 1) / size
  }

  /// The smallest power of two ≥ `value` (value ≥ 1).
  public static func roundUpToPowerOfTwo(_ value: Int) -> Int {
    value <= 1 ? 1 : 1 << (Int.bitWidth - (value - 1).leadingZeroBitCount)
  }

  static func level(ofPowerOfTwo size: Int) -> Int { size.trailingZeroBitCount }
}

/// The free space of one NAT IP: a buddy allocator over ports 0–65535 whose 0–1023 are never free.
///
/// Levels 1...15 hold blocks of 2...32768 ports; each level is a bitmap of free blocks plus a free
/// count and a "no free block before this word" hint, all in one flat buffer so that a NAT IP is a
/// single allocation. Allocation takes the lowest-addressed block of the smallest level that fits
/// (deterministic), splitting it; freeing merges buddies back.
struct PortSpace: Hashable, Sendable {
  static let minLevel = 1
  static let maxLevel = 15
  // Layout: [0..<16] free counts per level, [16..<32] hints (first word worth scanning), then the
  // level bitmaps: level k has 2^(16-k) bits in max(1, 2^(10-k)) words.
  private static let header = 32
  private static let totalWords = header + 1028

  private var words: [UInt64]

  init() {
    words = Array(repeating: 0, count: Self.totalWords)
    // Fresh IP: one free block at each of 1024 (level 10), 2048, 4096, …, 32768 (level 15).
    for level in 10...Self.maxLevel { setFree(offset: 1 << level, level: level) }
  }

  @inline(__always)
  private static func base(_ level: Int) -> Int {
    level <= 10 ? header + 1024 - (1 << (11 - level)) : header + 1023 + (level - 11)
  }

  @inline(__always)
  func freeCount(level: Int) -> Int { Int(words[level]) }

  /// All free ports of this NAT IP.
  var freePorts: Int {
    var total = 0
    for level in Self.minLevel...Self.maxLevel { total += Int(words[level]) << level }
    return total
  }

  @inline(__always)
  func canAllocate(level: Int) -> Bool {
    var l = level
    while l <= Self.maxLevel {
      if words[l] != 0 { return true }
      l += 1
    }
    return false
  }

  /// The largest level with a free block, or 0 when full.
  var largestFreeLevel: Int {
    var l = Self.maxLevel
    while l >= Self.minLevel {
      if words[l] != 0 { return l }
      l -= 1
    }
    return 0
  }

  @inline(__always)
  func isFree(offset: Int, level: Int) -> Bool {
    let index = offset >> level
    return words[Self.base(level) + index >> 6] & (1 << UInt64(index & 63)) != 0
  }

  @inline(__always)
  private mutating func setFree(offset: Int, level: Int) {
    let index = offset >> level
    let word = index >> 6
    words[Self.base(level) + word] |= 1 << UInt64(index & 63)
    words[level] += 1
    if UInt64(word) < words[16 + level] { words[16 + level] = UInt64(word) }
  }

  @inline(__always)
  private mutating func clearFree(offset: Int, level: Int) {
    let index = offset >> level
    words[Self.base(level) + index >> 6] &= ~(1 << UInt64(index & 63))
    words[level] -= 1
  }

  /// Lowest free block at exactly `level`; the caller knows the count is non-zero.
  @inline(__always)
  private func firstFree(level: Int) -> (offset: Int, word: Int) {
    let base = Self.base(level)
    var word = Int(words[16 + level])
    while words[base + word] == 0 { word += 1 }
    let index = word << 6 | words[base + word].trailingZeroBitCount
    return (index << level, word)
  }

  /// Where `allocate(level:)` would put a block, without taking it.
  func peek(level: Int) -> Int? {
    var l = level
    while l <= Self.maxLevel, words[l] == 0 { l += 1 }
    guard l <= Self.maxLevel else { return nil }
    return firstFree(level: l).offset
  }

  /// Takes the lowest block of the smallest level that fits and returns its first port.
  mutating func allocate(level: Int) -> Int? {
    var l = level
    while l <= Self.maxLevel, words[l] == 0 { l += 1 }
    guard l <= Self.maxLevel else { return nil }
    let (offset, word) = firstFree(level: l)
    words[16 + l] = UInt64(word)
    clearFree(offset: offset, level: l)
    while l > level {
      l -= 1
      setFree(offset: offset + 1 << l, level: l)
    }
    return offset
  }

  /// Takes one specific block (restoring a previous allocation). False if any part is not free.
  mutating func allocate(offset: Int, level: Int) -> Bool {
    guard offset >= NATPorts.firstPort, offset & ((1 << level) - 1) == 0, offset + (1 << level) <= 65536 else { return false }
    var l = level
    while l <= Self.maxLevel {
      let container = offset & ~((1 << l) - 1)
      if isFree(offset: container, level: l) {
        clearFree(offset: container, level: l)
        while l > level {
          l -= 1
          let half = offset & ~((1 << l) - 1)
          setFree(offset: half ^ (1 << l), level: l)
        }
        return true
      }
      l += 1
    }
    return false
  }

  /// Returns a block, merging it with free buddies; the result is the level of the merged block.
  @discardableResult
  mutating func free(offset: Int, level: Int) -> Int {
    var offset = offset
    var l = level
    while l < Self.maxLevel {
      let buddy = offset ^ (1 << l)
      guard isFree(offset: buddy, level: l) else { break }
      clearFree(offset: buddy, level: l)
      offset &= ~(1 << l)
      l += 1
    }
    setFree(offset: offset, level: l)
    return l
  }
}
