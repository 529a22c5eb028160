public import HostnatAddressing
public import HostnatProto

/// Control.proto rule 14: every number and list read from the wire is checked before anything
/// uses it. Versions and epochs are stored in SQLite's signed 64-bit integers and incremented,
/// so they must stay well below 2^63; ports are 16-bit; lists are bounded so one message cannot
/// make the controller hold or walk an unbounded amount. A message that fails is refused with
/// the field's name and counted; nothing in it is acted on.
public enum WireBounds {
  /// Largest version or epoch accepted from a host (2^62: room to count up from it).
  public static let maxVersion: UInt64 = 1 << 62
  /// Longest host id, boot id, nonce, digest, store id, instance or NIC name.
  public static let maxIdentifier = 256
  /// Most blocks in one inventory (the edge lists every block of every host).
  public static let maxBlocks = 1 << 20
  /// Most features, NICs in a usage report, idle blocks per NIC.
  public static let maxFeatures = 64
  public static let maxNics = 65_536
  public static let maxIdleBlocks = 65_536
  /// Longest NACK reason kept.
  public static let maxReason = 4096

  /// Checks an agent's message.
  public static func check(_ message: Hostnat_V1_AgentMessage) throws(FieldError) {
    switch message.message {
    case .hello(let hello)?: try check(hello)
    case .ack(let ack)?: try check(ack)
    case .nack(let nack)?: try check(nack)
    case .heartbeat?, nil: break
    case .usage(let report)?:
      try version(report.appliedVersion, "usage.appliedVersion")
      try version(report.appliedEpoch, "usage.appliedEpoch")
      try count(report.nics.count, maxNics, "usage.nics")
      for (i, nic) in report.nics.enumerated() {
        try identifier(nic.instance, "usage.nics[\(i)].instance")
        try identifier(nic.nic, "usage.nics[\(i)].nic")
        try ports(nic.portsAllocated, "usage.nics[\(i)].portsAllocated")
        try ports(nic.portsInUse, "usage.nics[\(i)].portsInUse")
        try count(nic.idleBlocks.count, maxIdleBlocks, "usage.nics[\(i)].idleBlocks")
        for (j, block) in nic.idleBlocks.enumerated() {
          try range(block.firstPort, block.count, "usage.nics[\(i)].idleBlocks[\(j)]")
        }
      }
    case .portRequest(let request)?:
      try identifier(request.requestID, "portRequest.requestId", allowEmpty: false)
      try identifier(request.instance, "portRequest.instance")
      try identifier(request.nic, "portRequest.nic")
      try ports(request.portsAllocated, "portRequest.portsAllocated")
    }
  }

  /// Checks the edge's message.
  public static func check(_ message: Hostnat_V1_EdgeMessage) throws(FieldError) {
    switch message.message {
    case .hello(let hello)?: try check(hello)
    case .ack(let ack)?: try check(ack)
    case .nack(let nack)?: try check(nack)
    case .heartbeat?, nil: break
    }
  }

  public static func check(_ hello: Hostnat_V1_Hello) throws(FieldError) {
    try identifier(hello.hostID, "hello.hostId", allowEmpty: false)
    try identifier(hello.bootID, "hello.bootId")
    try identifier(hello.appliedStoreID, "hello.appliedStoreId")
    try identifier(hello.appliedDigest, "hello.appliedDigest")
    try identifier(hello.softwareVersion, "hello.softwareVersion")
    try identifier(hello.underlayAddress, "hello.underlayAddress")
    try version(hello.appliedVersion, "hello.appliedVersion")
    try version(hello.appliedEpoch, "hello.appliedEpoch")
    try count(hello.features.count, maxFeatures, "hello.features")
    for (i, feature) in hello.features.enumerated() { try identifier(feature, "hello.features[\(i)]") }
    try count(hello.blocks.count, maxBlocks, "hello.blocks")
    for (i, block) in hello.blocks.enumerated() {
      try range(block.firstPort, block.count, "hello.blocks[\(i)]")
      guard IPv4Address(block.natIp) != nil else {
        throw FieldError(field: "hello.blocks[\(i)].natIp", reason: "\(String(block.natIp.prefix(64)).debugDescription) is not an IPv4 address")
      }
      guard case .UNRECOGNIZED = block.state else { continue }
      throw FieldError(field: "hello.blocks[\(i)].state", reason: "unknown block state \(block.state.rawValue)")
    }
  }

  public static func check(_ ack: Hostnat_V1_Ack) throws(FieldError) {
    try identifier(ack.nonce, "ack.nonce")
    try identifier(ack.digest, "ack.digest")
    try version(ack.version, "ack.version")
    try version(ack.epoch, "ack.epoch")
  }

  public static func check(_ nack: Hostnat_V1_Nack) throws(FieldError) {
    try identifier(nack.nonce, "nack.nonce")
    try version(nack.version, "nack.version")
    try version(nack.appliedVersion, "nack.appliedVersion")
    try version(nack.epoch, "nack.epoch")
    try count(nack.error.utf8.count, maxReason, "nack.error")
  }

  static func version(_ value: UInt64, _ field: String) throws(FieldError) {
    guard value <= maxVersion else { throw FieldError(field: field, reason: "\(value) is above the largest accepted, 2^62") }
  }

  static func ports(_ value: UInt32, _ field: String) throws(FieldError) {
    guard value <= 65_536 else { throw FieldError(field: field, reason: "\(value) ports is more than 65536") }
  }

  static func range(_ first: UInt32, _ count: UInt32, _ field: String) throws(FieldError) {
    guard first <= 65_535, count >= 1, UInt64(first) + UInt64(count) <= 65_536 else {
      throw FieldError(field: field, reason: "ports \(first)+\(count) are not within 0...65535")
    }
  }

  static func count(_ value: Int, _ limit: Int, _ field: String) throws(FieldError) {
    guard value <= limit else { throw FieldError(field: field, reason: "\(value) is more than \(limit)") }
  }

  static func identifier(_ value: String, _ field: String, allowEmpty: Bool = true) throws(FieldError) {
    if !allowEmpty, value.isEmpty { throw FieldError(field: field, reason: "must not be empty") }
    guard value.utf8.count <= maxIdentifier else {
      throw FieldError(field: field, reason: "\(value.utf8.count) bytes is longer than \(maxIdentifier)")
    }
  }
}
