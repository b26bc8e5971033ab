import Foundation

/// Splits a SQL script into statements, so each runs through the extended
/// query protocol (which takes one statement at a time).
///
/// Semicolons inside quotes (`'…'`, `"…"`), dollar-quoted bodies (`$$…$$`,
/// `$tag$…$tag$`) and comments (`-- …`, `/* … */`) do not end a statement.
enum SQLScript {
    static func statements(in script: String) -> [String] {
        var statements: [String] = []
        var current = ""
        let characters = Array(script)
        var index = 0
        func peek(_ offset: Int) -> Character? {
            index + offset < characters.count ? characters[index + offset] : nil
        }
        while index < characters.count {
            let character = characters[index]
            if character == "-", peek(1) == "-" {
                while index < characters.count, characters[index] != "\n" { index += 1 }
                continue
            }
            if character == "/", peek(1) == "*" {
                index += 2
                while index < characters.count, !(characters[index] == "*" && peek(1) == "/") { index += 1 }
                index += 2
                continue
            }
            if character == "'" || character == "\"" {
                current.append(character)
                index += 1
                while index < characters.count {
                    current.append(characters[index])
                    if characters[index] == character {
                        if peek(1) == character {  // doubled quote inside the literal
                            current.append(character)
                            index += 2
                            continue
                        }
                        index += 1
                        break
                    }
                    index += 1
                }
                continue
            }
            if character == "$", let tagEnd = dollarTagEnd(characters, from: index) {
                let tag = String(characters[index...tagEnd])
                current += tag
                index = tagEnd + 1
                while index < characters.count {
                    if characters[index] == "$", String(characters[index..<min(characters.count, index + tag.count)]) == tag {
                        current += tag
                        index += tag.count
                        break
                    }
                    current.append(characters[index])
                    index += 1
                }
                continue
            }
            if character == ";" {
                let statement = current.trimmingCharacters(in: .whitespacesAndNewlines)
                if !statement.isEmpty { statements.append(statement) }
                current = ""
                index += 1
                continue
            }
            current.append(character)
            index += 1
        }
        let last = current.trimmingCharacters(in: .whitespacesAndNewlines)
        if !last.isEmpty { statements.append(last) }
        return statements
    }

    /// The index of the closing `$` of a dollar-quote tag starting at `start`.
    private static func dollarTagEnd(_ characters: [Character], from start: Int) -> Int? {
        var index = start + 1
        while index < characters.count {
            let character = characters[index]
            if character == "$" { return index }
            guard character.isLetter || character == "_" || (character.isNumber && index > start + 1) else { return nil }
            index += 1
        }
        return nil
    }
}
