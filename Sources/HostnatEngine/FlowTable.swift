// Flow state lives in one flat region so it could be a memory-mapped file that survives a crash:
//
//   [header 64 B][flow slots: capacity × 40 B][inside index: 2·capacity × 8 B]
//   [outside index: 2·capacity × 8 B][EIM mappings: 2·capacity × 16 B]
//
// Flows are fixed POD slots allocated from a free list. Two open-addressing indexes (linear probing,
// backward-shift deletion, no tombstones) find a flow by its inside 5-tuple (outbound packets) and by
// its outside 5-tuple (inbound packets); an entry is (hash low 32 bits << 32) | (slot + 1). The
// mapping table holds endpoint-independent mappings (proto, inside IP:port) → NAT IP:port with a
// reference count of the flows using them. Everything, including the free list, RNG and sweep cursor,
// is inside the region, so re-attaching resumes exactly.

/// One flow: 40 bytes of plain data.
@usableFromInline
struct FlowSlot {
  var insideIP: UInt32
  var remoteIP: UInt32
  var natIP: UInt32
  var insidePort: UInt16
  var remotePort: UInt16
  var natPort: UInt16
  var proto: UInt8
  var tcpState: TCPState
  var vmIndex: UInt16
  var flags: Flags
  var reserved: UInt8
  var generation: UInt32
  var nextFree: UInt32
  var expiresAt: UInt64

  /// One byte in the region: the raw values are part of its layout.
  struct Flags: OptionSet {
    let rawValue: UInt8
    static let occupied = Flags(rawValue: 1)
    /// The flow holds a reference on an EIM mapping (released when it ends).
    static let hasMapping = Flags(rawValue: 2)
  }
}

/// EIM mapping: 16 bytes; empty when `refAndProto == 0`.
@usableFromInline
struct MappingSlot {
  var insideIP: UInt32
  var natIP: UInt32
  var insidePort: UInt16
  var natPort: UInt16
  /// Reference count in the low 24 bits, protocol in the high 8.
  var refAndProto: UInt32
}

/// Header fields, at fixed byte offsets (the layout is versioned, not Swift-struct dependent).
enum RegionHeader {
  static let size = 64
  static let magic: UInt64 = 0x3157_4C46_5441_4E48  // "HNATFLW1" little-endian
  static let layoutVersion: UInt32 = 1
  static let magicOffset = 0
  static let versionOffset = 8
  static let capacityOffset = 12
  static let indexCapacityOffset = 16
  static let freeHeadOffset = 20
  static let seedOffset = 24
  static let flowCountOffset = 32
  static let highWaterOffset = 36
  static let sweepCursorOffset = 40
  static let generationOffset = 44
  static let rngOffset = 48
  static let mappingCountOffset = 56
}

@usableFromInline
let noSlot: UInt32 = .max

@inline(__always)
func mix(_ a: UInt64, _ b: UInt64) -> UInt64 {
  let m = a.multipliedFullWidth(by: b)
  return m.high ^ m.low
}

/// wyhash-style mix of a 5-tuple with the table's seed.
@inline(__always)
func hashTuple(_ ipA: UInt32, _ ipB: UInt32, _ portA: UInt16, _ portB: UInt16, _ proto: UInt8, seed: UInt64) -> UInt64 {
  let x = UInt64(ipA) << 32 | UInt64(ipB)
  let y = UInt64(portA) << 32 | UInt64(portB) << 16 | UInt64(proto)
  return mix(x ^ 0xA076_1D64_78BD_642F ^ seed, y ^ 0xE703_7ED1_A0B4_28DB)
}

/// Non-owning handle on a formatted region.
struct FlowTable {
  let base: UnsafeMutableRawPointer
  let capacity: Int
  let indexMask: Int
  let flows: UnsafeMutablePointer<FlowSlot>
  let inside: UnsafeMutablePointer<UInt64>
  let outside: UnsafeMutablePointer<UInt64>
  let mappings: UnsafeMutablePointer<MappingSlot>
  let seed: UInt64

  static func indexCapacity(for capacity: Int) -> Int {
    var n = 16
    while n < capacity * 2 { n <<= 1 }
    return n
  }

  static func regionSize(capacity: Int) -> Int {
    let index = indexCapacity(for: capacity)
    return RegionHeader.size + capacity * MemoryLayout<FlowSlot>.stride + index * 8 * 2
      + index * MemoryLayout<MappingSlot>.stride
  }

  static func checkLayout() {
    precondition(MemoryLayout<FlowSlot>.stride == 40 && MemoryLayout<MappingSlot>.stride == 16, "flow slot layout changed")
  }

  private init(base: UnsafeMutableRawPointer, capacity: Int, seed: UInt64) {
    self.base = base
    self.capacity = capacity
    let index = FlowTable.indexCapacity(for: capacity)
    indexMask = index - 1
    var offset = RegionHeader.size
    flows = (base + offset).bindMemory(to: FlowSlot.self, capacity: capacity)
    offset += capacity * MemoryLayout<FlowSlot>.stride
    inside = (base + offset).bindMemory(to: UInt64.self, capacity: index)
    offset += index * 8
    outside = (base + offset).bindMemory(to: UInt64.self, capacity: index)
    offset += index * 8
    mappings = (base + offset).bindMemory(to: MappingSlot.self, capacity: index)
    self.seed = seed
  }

  /// Writes a fresh header and empty tables into `region`.
  static func format(_ region: UnsafeMutableRawBufferPointer, capacity: Int, seed: UInt64) throws(EngineError) -> FlowTable {
    checkLayout()
    guard capacity > 0, capacity < Int(UInt32.max / 4) else { throw .invalidCapacity(capacity) }
    let needed = regionSize(capacity: capacity)
    guard let base = region.baseAddress else { throw .regionTooSmall(needed: needed, available: 0) }
    guard region.count >= needed else { throw .regionTooSmall(needed: needed, available: region.count) }
    guard UInt(bitPattern: base) % 8 == 0 else { throw .regionMisaligned }
    base.initializeMemory(as: UInt8.self, repeating: 0, count: needed)
    base.storeBytes(of: RegionHeader.magic, toByteOffset: RegionHeader.magicOffset, as: UInt64.self)
    base.storeBytes(of: RegionHeader.layoutVersion, toByteOffset: RegionHeader.versionOffset, as: UInt32.self)
    base.storeBytes(of: UInt32(capacity), toByteOffset: RegionHeader.capacityOffset, as: UInt32.self)
    base.storeBytes(of: UInt32(indexCapacity(for: capacity)), toByteOffset: RegionHeader.indexCapacityOffset, as: UInt32.self)
    base.storeBytes(of: noSlot, toByteOffset: RegionHeader.freeHeadOffset, as: UInt32.self)
    base.storeBytes(of: seed, toByteOffset: RegionHeader.seedOffset, as: UInt64.self)
    base.storeBytes(of: seed ^ 0x9E37_79B9_7F4A_7C15 | 1, toByteOffset: RegionHeader.rngOffset, as: UInt64.self)
    return FlowTable(base: base, capacity: capacity, seed: seed)
  }

  /// Validates the header of a region written by `format` (possibly by an earlier process).
  static func attach(_ region: UnsafeMutableRawBufferPointer) throws(EngineError) -> FlowTable {
    checkLayout()
    guard let base = region.baseAddress, region.count >= RegionHeader.size else {
      throw .regionTooSmall(needed: RegionHeader.size, available: region.count)
    }
    guard UInt(bitPattern: base) % 8 == 0 else { throw .regionMisaligned }
    guard base.load(fromByteOffset: RegionHeader.magicOffset, as: UInt64.self) == RegionHeader.magic else { throw .badMagic }
    let version = base.load(fromByteOffset: RegionHeader.versionOffset, as: UInt32.self)
    guard version == RegionHeader.layoutVersion else { throw .unsupportedLayoutVersion(version) }
    let capacity = Int(base.load(fromByteOffset: RegionHeader.capacityOffset, as: UInt32.self))
    guard capacity > 0, capacity < Int(UInt32.max / 4) else { throw .corruptHeader("capacity \(capacity)") }
    let index = Int(base.load(fromByteOffset: RegionHeader.indexCapacityOffset, as: UInt32.self))
    guard index == indexCapacity(for: capacity) else { throw .corruptHeader("index capacity \(index)") }
    let needed = regionSize(capacity: capacity)
    guard region.count >= needed else { throw .regionTooSmall(needed: needed, available: region.count) }
    let table = FlowTable(base: base, capacity: capacity, seed: base.load(fromByteOffset: RegionHeader.seedOffset, as: UInt64.self))
    let highWater = Int(table.highWater)
    guard highWater <= capacity, Int(table.flowCount) <= highWater else { throw .corruptHeader("flow count") }
    guard table.freeHead == noSlot || Int(table.freeHead) < highWater else { throw .corruptHeader("free list") }
    return table
  }

  // MARK: header fields

  @inline(__always) private func field32(_ offset: Int) -> UInt32 { base.load(fromByteOffset: offset, as: UInt32.self) }
  @inline(__always) private func setField32(_ offset: Int, _ v: UInt32) { base.storeBytes(of: v, toByteOffset: offset, as: UInt32.self) }

  var freeHead: UInt32 {
    @inline(__always) get { field32(RegionHeader.freeHeadOffset) }
    nonmutating set { setField32(RegionHeader.freeHeadOffset, newValue) }
  }
  var flowCount: UInt32 {
    @inline(__always) get { field32(RegionHeader.flowCountOffset) }
    nonmutating set { setField32(RegionHeader.flowCountOffset, newValue) }
  }
  /// Slots at or above this index have never been used.
  var highWater: UInt32 {
    @inline(__always) get { field32(RegionHeader.highWaterOffset) }
    nonmutating set { setField32(RegionHeader.highWaterOffset, newValue) }
  }
  var sweepCursor: UInt32 {
    get { field32(RegionHeader.sweepCursorOffset) }
    nonmutating set { setField32(RegionHeader.sweepCursorOffset, newValue) }
  }
  var generation: UInt32 {
    @inline(__always) get { field32(RegionHeader.generationOffset) }
    nonmutating set { setField32(RegionHeader.generationOffset, newValue) }
  }
  var mappingCount: UInt32 {
    get { field32(RegionHeader.mappingCountOffset) }
    nonmutating set { setField32(RegionHeader.mappingCountOffset, newValue) }
  }

  /// xorshift64* kept in the region, so port choice is deterministic for a given seed and history.
  @inline(__always)
  func nextRandom() -> UInt64 {
    var x = base.load(fromByteOffset: RegionHeader.rngOffset, as: UInt64.self)
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    base.storeBytes(of: x, toByteOffset: RegionHeader.rngOffset, as: UInt64.self)
    return x &* 0x2545_F491_4F6C_DD1D
  }

  var bytes: Int { FlowTable.regionSize(capacity: capacity) }

  // MARK: slots

  @inline(__always)
  func allocateSlot() -> Int? {
    let head = freeHead
    if head != noSlot {
      freeHead = flows[Int(head)].nextFree
      return Int(head)
    }
    let hw = highWater
    guard Int(hw) < capacity else { return nil }
    highWater = hw &+ 1
    return Int(hw)
  }

  @inline(__always)
  func freeSlot(_ slot: Int) {
    flows[slot].flags = []
    flows[slot].nextFree = freeHead
    freeHead = UInt32(truncatingIfNeeded: slot)
  }

  // MARK: indexes

  @inline(__always)
  func insideHash(_ f: FlowSlot) -> UInt64 {
    hashTuple(f.insideIP, f.remoteIP, f.insidePort, f.remotePort, f.proto, seed: seed)
  }

  @inline(__always)
  func outsideHash(_ f: FlowSlot) -> UInt64 {
    hashTuple(f.natIP, f.remoteIP, f.natPort, f.remotePort, f.proto, seed: seed)
  }

  /// Slot of the flow with this inside 5-tuple, or -1.
  @inline(__always)
  func findInside(proto: UInt8, insideIP: UInt32, insidePort: UInt16, remoteIP: UInt32, remotePort: UInt16) -> Int {
    let h = hashTuple(insideIP, remoteIP, insidePort, remotePort, proto, seed: seed)
    let tag = h & 0xFFFF_FFFF
    var i = Int(truncatingIfNeeded: h) & indexMask
    while true {
      let e = inside[i]
      if e == 0 { return -1 }
      if e >> 32 == tag {
        let slot = Int(truncatingIfNeeded: e & 0xFFFF_FFFF) &- 1
        let f = flows[slot]
        if f.insideIP == insideIP && f.remoteIP == remoteIP && f.insidePort == insidePort && f.remotePort == remotePort
          && f.proto == proto
        {
          return slot
        }
      }
      i = (i &+ 1) & indexMask
    }
  }

  /// Slot of the flow with this outside 5-tuple, or -1.
  @inline(__always)
  func findOutside(proto: UInt8, natIP: UInt32, natPort: UInt16, remoteIP: UInt32, remotePort: UInt16) -> Int {
    let h = hashTuple(natIP, remoteIP, natPort, remotePort, proto, seed: seed)
    let tag = h & 0xFFFF_FFFF
    var i = Int(truncatingIfNeeded: h) & indexMask
    while true {
      let e = outside[i]
      if e == 0 { return -1 }
      if e >> 32 == tag {
        let slot = Int(truncatingIfNeeded: e & 0xFFFF_FFFF) &- 1
        let f = flows[slot]
        if f.natIP == natIP && f.remoteIP == remoteIP && f.natPort == natPort && f.remotePort == remotePort
          && f.proto == proto
        {
          return slot
        }
      }
      i = (i &+ 1) & indexMask
    }
  }

  @inline(__always)
  func indexInsert(_ index: UnsafeMutablePointer<UInt64>, hash h: UInt64, slot: Int) {
    var i = Int(truncatingIfNeeded: h) & indexMask
    while index[i] != 0 { i = (i &+ 1) & indexMask }
    index[i] = (h & 0xFFFF_FFFF) << 32 | UInt64(slot &+ 1)
  }

  /// Removes the entry pointing at `slot` and shifts later entries of the cluster back, so lookups
  /// never need tombstones.
  func indexRemove(_ index: UnsafeMutablePointer<UInt64>, hash h: UInt64, slot: Int) {
    let target = UInt64(slot &+ 1)
    var i = Int(truncatingIfNeeded: h) & indexMask
    while index[i] & 0xFFFF_FFFF != target {
      if index[i] == 0 { return }
      i = (i &+ 1) & indexMask
    }
    var j = i
    while true {
      j = (j &+ 1) & indexMask
      let e = index[j]
      if e == 0 { break }
      let home = Int(truncatingIfNeeded: e >> 32) & indexMask
      // Move e into the hole at i unless its home lies cyclically in (i, j].
      let inRange = i <= j ? (home > i && home <= j) : (home > i || home <= j)
      if !inRange {
        index[i] = e
        i = j
      }
    }
    index[i] = 0
  }

  // MARK: mappings (EIM)

  @inline(__always)
  func mappingHash(proto: UInt8, insideIP: UInt32, insidePort: UInt16) -> UInt64 {
    hashTuple(insideIP, 0x4D41_5050, insidePort, 0, proto, seed: seed)
  }

  /// Index of the endpoint's first mapping probed after index `previous` (from its home position
  /// when -1), or -1. An endpoint has one mapping per NAT rule it uses, all under the same key.
  func findMapping(proto: UInt8, insideIP: UInt32, insidePort: UInt16, after previous: Int = -1) -> Int {
    var i =
      previous >= 0
      ? (previous &+ 1) & indexMask
      : Int(truncatingIfNeeded: mappingHash(proto: proto, insideIP: insideIP, insidePort: insidePort)) & indexMask
    while true {
      let m = mappings[i]
      if m.refAndProto == 0 { return -1 }
      if m.insideIP == insideIP && m.insidePort == insidePort && UInt8(truncatingIfNeeded: m.refAndProto >> 24) == proto {
        return i
      }
      i = (i &+ 1) & indexMask
    }
  }

  func insertMapping(proto: UInt8, insideIP: UInt32, insidePort: UInt16, natIP: UInt32, natPort: UInt16) {
    var i = Int(truncatingIfNeeded: mappingHash(proto: proto, insideIP: insideIP, insidePort: insidePort)) & indexMask
    while mappings[i].refAndProto != 0 { i = (i &+ 1) & indexMask }
    mappings[i] = MappingSlot(
      insideIP: insideIP, natIP: natIP, insidePort: insidePort, natPort: natPort, refAndProto: UInt32(proto) << 24 | 1)
    mappingCount &+= 1
  }

  /// Drops one reference from the mapping the flow was created with; the mapping may have been
  /// re-pointed since (after a config change), in which case the flow no longer holds a reference.
  /// Returns true when this was the last reference and the mapping (on the flow's NAT IP:port) is gone.
  @discardableResult
  func releaseMapping(of f: FlowSlot) -> Bool {
    var i = findMapping(proto: f.proto, insideIP: f.insideIP, insidePort: f.insidePort)
    while i >= 0 && (mappings[i].natIP != f.natIP || mappings[i].natPort != f.natPort) {
      i = findMapping(proto: f.proto, insideIP: f.insideIP, insidePort: f.insidePort, after: i)
    }
    guard i >= 0 else { return false }
    let refs = mappings[i].refAndProto & 0xFF_FFFF
    if refs > 1 {
      mappings[i].refAndProto &-= 1
      return false
    }
    // Backward-shift delete, as for the flow indexes.
    var hole = i
    var j = i
    while true {
      j = (j &+ 1) & indexMask
      let m = mappings[j]
      if m.refAndProto == 0 { break }
      let home =
        Int(
          truncatingIfNeeded: mappingHash(
            proto: UInt8(truncatingIfNeeded: m.refAndProto >> 24), insideIP: m.insideIP, insidePort: m.insidePort))
        & indexMask
      let inRange = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j)
      if !inRange {
        mappings[hole] = m
        hole = j
      }
    }
    mappings[hole] = MappingSlot(insideIP: 0, natIP: 0, insidePort: 0, natPort: 0, refAndProto: 0)
    mappingCount &-= 1
    return true
  }
}
