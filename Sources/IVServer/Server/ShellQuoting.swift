/// Quoting for a POSIX shell, for `ivserver qemu-args --shell`.
public enum ShellQuoting {
    public static func quote(_ word: String) -> String {
        let safe = word.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_./=:,+@%".contains($0)) }
        if safe && !word.isEmpty { return word }
        return "'" + word.replacingSingleQuotes + "'"
    }
}

extension String {
    fileprivate var replacingSingleQuotes: String {
        var out = ""
        for character in self { out += character == "'" ? "'\\''" : String(character) }
        return out
    }
}
