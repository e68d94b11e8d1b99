//! Where each key of the YAML file stands, so that every config error can name its line.
//!
//! serde_yaml reports a line only for the first syntax or type error; semantic errors found by
//! `compile` have none. A second, event-level pass over the same text (yaml-rust2's parser with
//! position markers) maps every key path, written as in error messages (`routes[2].upstream`),
//! to the line it starts on. It runs once per load, never on the request path.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Default)]
pub(crate) struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Builds the index; a text that does not parse yields an empty index (serde_yaml reports
    /// the syntax error with its own line).
    pub(crate) fn build(text: &str) -> LineIndex {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut builder, false);
        LineIndex {
            lines: builder.lines,
        }
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub(crate) fn line(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Builder {
    /// The path of the node that starts now, or `None` when the node is a mapping key.
    fn node_path(&mut self, event: &Event, mark: Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let item = format!("{path}[{next}]");
                *next += 1;
                self.lines.insert(item.clone(), mark.line());
                Some(item)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(key) => Some(key),
                None => {
                    let name = match event {
                        Event::Scalar(name, ..) => name.as_str(),
                        _ => "?",
                    };
                    let full = if path.is_empty() {
                        name.to_string()
                    } else {
                        format!("{path}.{name}")
                    };
                    self.lines.insert(full.clone(), mark.line());
                    // Remember the key: the next node is its value.
                    *key = Some(full);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if let Some(path) = self.node_path(&event, mark) {
                    self.stack.push(match event {
                        Event::MappingStart(..) => Frame::Map { path, key: None },
                        _ => Frame::Seq { path, next: 0 },
                    });
                }
            }
            Event::Scalar(..) | Event::Alias(..) => {
                self.node_path(&event, mark);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_nested_paths_to_lines() {
        let text = "listeners:\n  - name: a\n    address: x\nroutes:\n  - name: r0\n  - name: r1\n    match: { host: h }\n    upstream: u\n";
        let index = LineIndex::build(text);
        assert_eq!(index.line("listeners"), Some(1));
        assert_eq!(index.line("listeners[0].address"), Some(3));
        assert_eq!(index.line("routes[1]"), Some(6));
        assert_eq!(index.line("routes[1].upstream"), Some(8));
        assert_eq!(index.line("routes[1].match.host"), Some(7));
        // A path with no entry of its own falls back to its nearest ancestor.
        assert_eq!(index.line("routes[1].match.path"), Some(7));
        assert_eq!(index.line("nowhere"), None);
    }
}
