public import ArgumentParser
import Foundation

/// A command's failure, in one shape for every command (as grpc-swift's `RPCError`): what kind
/// of failure it is (`code`), the sentence the user reads (`message`), and the error underneath,
/// if any (`cause`). Commands report it as one line on stderr and an exit status (`exit`).
public struct CommandError: Error, CustomStringConvertible {
  /// What kind of failure; extensible like `RPCError.Code`.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let description: String
    /// A flag's value is malformed; found before anything was sent.
    public static let badFlag = Code(description: "bad flag")
    /// The controller refused the call or could not be reached.
    public static let callFailed = Code(description: "call failed")
    /// The process could not start (database, socket, options).
    public static let startFailed = Code(description: "start failed")
  }

  public var code: Code
  public var message: String
  public var cause: (any Error)?

  public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
    self.code = code
    self.message = message
    self.cause = cause
  }

  /// A malformed flag: names the flag and says why.
  public init(flag: String, reason: String) {
    self.init(.badFlag, "\(flag): \(reason)")
  }

  public var description: String { message }

  /// Prints `PREFIX MESSAGE` on stderr; the caller throws the returned exit code (ArgumentParser
  /// then exits without printing more).
  public func exit(_ prefix: String, status: Int32) -> ExitCode {
    FileHandle.standardError.write(Data("\(prefix) \(message)\n".utf8))
    return ExitCode(status)
  }
}
