import HostnatAddressing
internal import Glibc
internal import HostnatEngine

/// Why a flow region file could not be opened.
public struct FlowRegionError: Error, Sendable, Hashable, CustomStringConvertible {
  public var path: String
  public var reason: String
  public var description: String { "flow region \(path): \(reason)" }
}

/// The engine's flow table in a file mapped MAP_SHARED, so the table lives in the page cache and
/// survives the process (kill -9 included): an agent restarted with the same state directory attaches
/// to it and its established flows continue. Writes are not fsync'd; a crash of the machine (not the
/// process) may lose or tear recent updates, and a process killed mid-packet may leave one flow half
/// written — the engine's attach checks the header, and sweeps end what no longer matches the config.
public final class FlowRegion: @unchecked Sendable {
  public let path: String
  public let capacity: Int
  /// The mapped bytes (`NATEngine.regionSize(capacity:)`), page aligned.
  public let buffer: UnsafeMutableRawBufferPointer
  /// True when `open` found a valid table from an earlier run (its flows are kept).
  public let attached: Bool

  private init(path: String, capacity: Int, buffer: UnsafeMutableRawBufferPointer, attached: Bool) {
    self.path = path
    self.capacity = capacity
    self.buffer = buffer
    self.attached = attached
  }

  /// Maps `path` for `capacity` flows. A file of exactly the right size holding a table the engine
  /// can attach to is kept (`attached == true`); anything else is (re)created and formatted empty.
  public static func open(path: String, capacity: Int) throws(FlowRegionError) -> (region: FlowRegion, attached: Bool) {
    guard capacity > 0 else { throw FlowRegionError(path: path, reason: "capacity \(capacity) must be positive") }
    let size = NATEngine.regionSize(capacity: capacity)
    let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw FlowRegionError(path: path, reason: "open: \(String(cString: strerror(errno)))") }
    defer { Glibc.close(fd) }  // the mapping keeps the file referenced
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw FlowRegionError(path: path, reason: "fstat: \(String(cString: strerror(errno)))") }
    let existing = Int(st.st_size) == size
    if !existing {
      // Truncating to 0 first zeroes any old contents of a different layout.
      guard ftruncate(fd, 0) == 0, ftruncate(fd, off_t(size)) == 0 else {
        throw FlowRegionError(path: path, reason: "ftruncate: \(String(cString: strerror(errno)))")
      }
    }
    guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), base != MAP_FAILED else {
      throw FlowRegionError(path: path, reason: "mmap \(size) bytes: \(String(cString: strerror(errno)))")
    }
    let buffer = UnsafeMutableRawBufferPointer(start: base, count: size)
    var attached = false
    if existing, let probe = try? NATEngine(attaching: buffer, config: EngineConfig()), probe.capacity == capacity {
      attached = true
    }
    if !attached {
      var rng = SystemRandomNumberGenerator()
      do {
        _ = try NATEngine(formatting: buffer, capacity: capacity, seed: rng.next())
      } catch {
        munmap(base, size)
        throw FlowRegionError(path: path, reason: "format: \(error)")
      }
    }
    let region = FlowRegion(path: path, capacity: capacity, buffer: buffer, attached: attached)
    return (region, attached)
  }

  /// Schedules write-back of the mapping to the file (not needed for process restarts).
  public func flush() { msync(buffer.baseAddress, buffer.count, MS_ASYNC) }

  deinit { munmap(buffer.baseAddress, buffer.count) }
}
