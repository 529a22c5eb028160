import Foundation
public import SwiftProtobuf

/// A protobuf message kept in one file, replaced atomically (write to a temporary file, fsync,
/// rename, fsync the directory): after a crash at any moment the file holds either the old
/// message or the new one. This is the agent's and the edge's "last good config", which the lab
/// reads too.
public struct StateFile<Message: SwiftProtobuf.Message>: Sendable {
  public let path: String

  public init(path: String) { self.path = path }

  /// The stored message, nil when there is none yet. A file that does not decode is an error:
  /// starting from nothing would silently drop NAT for every VM on the host.
  public func load() throws -> Message? {
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    do {
      return try Message(serializedBytes: [UInt8](data))
    } catch {
      throw StateFileError(path: path, reason: "does not decode as \(Message.protoMessageName): \(error)")
    }
  }

  /// Replaces the stored message durably.
  public func store(_ message: Message) throws {
    let bytes: [UInt8] = try message.serializedBytes()
    let temporary = path + ".tmp"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw StateFileError(path: temporary, reason: "open: \(String(cString: strerror(errno)))") }
    var written = 0
    let result: Int32 = bytes.withUnsafeBytes { raw in
      while written < raw.count {
        let n = write(fd, raw.baseAddress! + written, raw.count - written)
        if n < 0 { if errno == EINTR { continue }; return errno }
        written += n
      }
      return fsync(fd) == 0 ? 0 : errno
    }
    close(fd)
    guard result == 0 else { throw StateFileError(path: temporary, reason: "write: \(String(cString: strerror(result)))") }
    guard rename(temporary, path) == 0 else {
      throw StateFileError(path: path, reason: "rename: \(String(cString: strerror(errno)))")
    }
    let directory = (path as NSString).deletingLastPathComponent
    let dirFD = open(directory.isEmpty ? "." : directory, O_RDONLY)
    if dirFD >= 0 { _ = fsync(dirFD); close(dirFD) }
  }
}

/// A state file that cannot be read or written, with the path and the reason.
public struct StateFileError: Error, CustomStringConvertible {
  public var path: String
  public var reason: String
  public init(path: String, reason: String) {
    self.path = path
    self.reason = reason
  }
  public var description: String { "\(path): \(reason)" }
}
