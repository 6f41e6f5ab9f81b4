//! Routing: queues and where a task message goes (Celery's `queue`, `exchange`, `routing_key`,
//! `task_default_queue`).

/// A queue as kombu declares it: bound to `exchange` with `routing_key`.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: String,
    pub exchange: String,
    /// `direct`, `topic` or `fanout`.
    pub exchange_type: String,
    pub routing_key: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// `x-max-priority`: makes RabbitMQ honour message priorities up to this value.
    pub max_priority: Option<u8>,
    /// `x-dead-letter-exchange`: where RabbitMQ sends the messages rejected from this queue
    /// (a worker rejects those it cannot run).
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`: their routing key there; by default they keep their own.
    pub dead_letter_routing_key: Option<String>,
}

impl Queue {
    /// Celery's queue for a name it was not configured with: `Queue(name, Exchange(name,
    /// 'direct'), routing_key=name)`, durable.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Queue {
            exchange: name.clone(),
            exchange_type: "direct".to_owned(),
            routing_key: name.clone(),
            name,
            durable: true,
            auto_delete: false,
            max_priority: None,
            dead_letter_exchange: None,
            dead_letter_routing_key: None,
        }
    }

    pub fn max_priority(mut self, max_priority: u8) -> Self {
        self.max_priority = Some(max_priority);
        self
    }

    /// Sends the messages rejected from this queue to `exchange` (`x-dead-letter-exchange`).
    pub fn dead_letter_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.dead_letter_exchange = Some(exchange.into());
        self
    }

    /// The routing key of dead-lettered messages (`x-dead-letter-routing-key`).
    pub fn dead_letter_routing_key(mut self, routing_key: impl Into<String>) -> Self {
        self.dead_letter_routing_key = Some(routing_key.into());
        self
    }

    pub fn exchange(
        mut self,
        exchange: impl Into<String>,
        exchange_type: impl Into<String>,
    ) -> Self {
        self.exchange = exchange.into();
        self.exchange_type = exchange_type.into();
        self
    }

    pub fn routing_key(mut self, routing_key: impl Into<String>) -> Self {
        self.routing_key = routing_key.into();
        self
    }
}

/// Where a task goes, by name: one entry of Celery's `task_routes` setting.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskRoute {
    /// A task name, or a glob with `*` (and `?` for one character) such as `"feed.tasks.*"`.
    pub pattern: String,
    pub queue: Option<String>,
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    pub priority: Option<u8>,
}

impl TaskRoute {
    /// Routes the tasks matching `pattern` to `queue`.
    pub fn new(pattern: impl Into<String>, queue: impl Into<String>) -> Self {
        TaskRoute {
            pattern: pattern.into(),
            queue: Some(queue.into()),
            ..TaskRoute::default()
        }
    }

    pub fn routing_key(mut self, routing_key: impl Into<String>) -> Self {
        self.routing_key = Some(routing_key.into());
        self
    }

    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = Some(exchange.into());
        self
    }

    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Whether the pattern is a glob: as in Celery's `MapRoute`, only a name with a `*` is one
    /// (then `?` matches one character, `[seq]` one of a set and `[!seq]` one outside it, as
    /// `fnmatch` reads them); any other is a task name, matched exactly.
    pub fn is_glob(&self) -> bool {
        self.pattern.contains('*')
    }

    pub fn matches(&self, task: &str) -> bool {
        match self.is_glob() {
            true => glob_matches(&self.pattern, task),
            false => self.pattern == task,
        }
    }

    /// The route for a task among `routes`, as Celery's `MapRoute` finds it: a route naming
    /// the task exactly first, else the first glob that matches.
    pub fn find<'a>(routes: &'a [TaskRoute], task: &str) -> Option<&'a TaskRoute> {
        routes
            .iter()
            .find(|route| !route.is_glob() && route.pattern == task)
            .or_else(|| {
                routes
                    .iter()
                    .find(|route| route.is_glob() && route.matches(task))
            })
    }
}

/// Shell-style matching as Celery's `MapRoute` gets it from Python's `fnmatch.translate`, over
/// characters (a `?` is one character of a non-ASCII name, not one byte): `*` is any run, `?`
/// one character, `[seq]` one character of the set and `[!seq]` one outside it. In a set, `a-z`
/// is a range (a reversed one, `z-a`, holds nothing), a `-` first or last and a `]` first are
/// themselves, and a `[` never closed is itself, as `fnmatch` reads them.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern = glob_tokens(pattern);
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Each run between stars has a fixed length, so its leftmost match is the best one: going
    // back to the last star is enough (what `fnmatch`'s atomic groups amount to).
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Glob::Star) => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(token) if token.matches(text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|token| matches!(token, Glob::Star))
}

enum Glob {
    Star,
    Any,
    Char(char),
    /// A set of single characters and inclusive ranges; `negated` for `[!…]`.
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    fn matches(&self, c: char) -> bool {
        match self {
            Glob::Star => true,
            Glob::Any => true,
            Glob::Char(own) => *own == c,
            Glob::Set { negated, ranges } => {
                ranges.iter().any(|(low, high)| (*low..=*high).contains(&c)) != *negated
            }
        }
    }
}

fn glob_tokens(pattern: &str) -> Vec<Glob> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => tokens.push(Glob::Star),
            '?' => tokens.push(Glob::Any),
            '[' => match glob_set(&chars[i..]) {
                Some((set, used)) => {
                    tokens.push(set);
                    i += used;
                }
                None => tokens.push(Glob::Char('[')),
            },
            c => tokens.push(Glob::Char(c)),
        }
    }
    tokens
}

/// The set after a `[` and how many characters it took, closing `]` included; `None` when no
/// `]` closes it. A `]` right after `[` or `[!` is a member, not the end.
fn glob_set(after: &[char]) -> Option<(Glob, usize)> {
    let negated = after.first() == Some(&'!');
    let start = usize::from(negated);
    let search_from = start + usize::from(after.get(start) == Some(&']'));
    let end = search_from + after[search_from..].iter().position(|&c| c == ']')?;
    let members = &after[start..end];
    let mut ranges = Vec::new();
    let mut k = 0;
    while k < members.len() {
        // `x-y` is a range when a character follows the `-`; after one, the next character
        // starts afresh (in `a-b-c` the second `-` is itself).
        if members.get(k + 1) == Some(&'-') && k + 2 < members.len() {
            ranges.push((members[k], members[k + 2]));
            k += 3;
        } else {
            ranges.push((members[k], members[k]));
            k += 1;
        }
    }
    Some((Glob::Set { negated, ranges }, end + 1))
}

/// Where one message is published, and the queue to declare first.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub queue: Queue,
    pub exchange: String,
    pub routing_key: String,
}

impl Route {
    /// Celery's rule (`AMQP.send_task_message`): a message for a queue on a direct exchange goes
    /// through the default exchange `""` keyed by the queue's name, unless both an exchange and
    /// a routing key are given (one of them alone is not enough to route anywhere else: with a
    /// routing key alone the queue's own binding would not match, and RabbitMQ would drop the
    /// message). For other exchange types, the given exchange and key, else the queue's.
    pub fn resolve(queue: Queue, exchange: Option<&str>, routing_key: Option<&str>) -> Route {
        let exchange = exchange.filter(|name| !name.is_empty());
        let routing_key = routing_key.filter(|key| !key.is_empty());
        match (exchange, routing_key) {
            (Some(exchange), Some(routing_key)) => Route {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                queue,
            },
            _ if queue.exchange_type == "direct" => Route {
                exchange: String::new(),
                routing_key: queue.name.clone(),
                queue,
            },
            _ => Route {
                exchange: exchange.unwrap_or(&queue.exchange).to_owned(),
                routing_key: routing_key.unwrap_or(&queue.routing_key).to_owned(),
                queue,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_routes_match_names_and_globs() {
        assert!(TaskRoute::new("tasks.add", "q").matches("tasks.add"));
        assert!(!TaskRoute::new("tasks.add", "q").matches("tasks.addx"));
        assert!(TaskRoute::new("feed.*", "q").matches("feed.tasks.import"));
        assert!(TaskRoute::new("*.import_?", "q").matches("feed.import_1"));
        assert!(!TaskRoute::new("*.import_?", "q").matches("feed.import_12"));
        assert!(TaskRoute::new("a*b*c", "q").matches("aXbYbZc"));
        // Without a `*`, a name: `?` is itself.
        assert!(TaskRoute::new("tasks.add?", "q").matches("tasks.add?"));
        assert!(!TaskRoute::new("tasks.add?", "q").matches("tasks.adds"));
    }

    #[test]
    fn globs_read_character_sets_as_fnmatch_does() {
        // Each answer is Python's `re.match(fnmatch.translate(pattern), name)`, as `MapRoute`
        // matches a glob.
        let cases = [
            ("tasks.[ab]*", "tasks.add", true),
            ("tasks.[ab]*", "tasks.mul", false),
            ("tasks.[!ab]*", "tasks.mul", true),
            ("tasks.[!ab]*", "tasks.add", false),
            ("tasks.v[0-9]*", "tasks.v2.add", true),
            ("tasks.v[0-9]*", "tasks.vx", false),
            ("t[z-a]*", "tz", false),
            ("t[!z-a]*", "tz", true),
            ("t[a-c-e]*", "t-", true),
            ("t[a-c-e]*", "td", false),
            ("t[a-c-e]*", "te", true),
            ("t[]]*", "t]x", true),
            ("t[!]]*", "t]x", false),
            ("t[!]]*", "tax", true),
            ("t[*", "t[x", true),
            ("t[*", "tx", false),
            ("t[-a]*", "t-", true),
            ("t[a-]*", "t-", true),
            ("t[!]*", "t!]", false),
            ("t[!]*", "t[!]x", true),
            ("é?*", "éa", true),
            ("?*", "é", true),
            ("[ab]?[!x]*", "aéy", true),
            ("t[bz-ac]*", "tb", true),
            ("t[bz-ac]*", "tz", false),
            ("t[bz-ac]*", "tc", true),
            ("t[\\]*", "t\\", true),
            ("*.[!a-c]", "x.d", true),
            ("*.[!a-c]", "x.b", false),
        ];
        for (pattern, name, matches) in cases {
            assert_eq!(
                TaskRoute::new(pattern, "q").matches(name),
                matches,
                "{pattern:?} on {name:?}"
            );
        }
        // Without a `*` a pattern is a name, brackets and all.
        assert!(TaskRoute::new("tasks.[ab]", "q").matches("tasks.[ab]"));
        assert!(!TaskRoute::new("tasks.[ab]", "q").matches("tasks.a"));
    }

    #[test]
    fn an_exact_name_wins_over_a_glob_listed_before_it() {
        let routes = [
            TaskRoute::new("feed.*", "feeds"),
            TaskRoute::new("feed.import", "imports"),
        ];
        let queue = |task| TaskRoute::find(&routes, task).and_then(|r| r.queue.clone());
        assert_eq!(queue("feed.import").as_deref(), Some("imports"));
        assert_eq!(queue("feed.export").as_deref(), Some("feeds"));
        assert_eq!(queue("other"), None);
    }

    #[test]
    fn direct_queues_go_through_the_default_exchange() {
        let route = Route::resolve(Queue::new("celery"), None, None);
        assert_eq!(
            (route.exchange.as_str(), route.routing_key.as_str()),
            ("", "celery")
        );
    }

    #[test]
    fn a_direct_queue_needs_both_an_exchange_and_a_key_to_be_routed_elsewhere() {
        // One of them alone would route by the queue's binding with the other half changed,
        // which matches nothing: Celery sends such a message to the queue by name.
        for (exchange, key) in [
            (None, Some("other")),
            (Some("x"), None),
            (Some(""), Some("other")),
        ] {
            let route = Route::resolve(Queue::new("q"), exchange, key);
            assert_eq!(
                (route.exchange.as_str(), route.routing_key.as_str()),
                ("", "q"),
                "{exchange:?} {key:?}"
            );
        }
        let route = Route::resolve(Queue::new("q"), Some("x"), Some("other"));
        assert_eq!(
            (route.exchange.as_str(), route.routing_key.as_str()),
            ("x", "other")
        );
    }

    #[test]
    fn a_topic_queue_takes_the_given_half_and_its_own_other_half() {
        let topic = || {
            Queue::new("news")
                .exchange("feeds", "topic")
                .routing_key("news.#")
        };
        let route = Route::resolve(topic(), None, Some("news.sport"));
        assert_eq!(
            (route.exchange.as_str(), route.routing_key.as_str()),
            ("feeds", "news.sport")
        );
        let route = Route::resolve(topic(), Some("other"), None);
        assert_eq!(
            (route.exchange.as_str(), route.routing_key.as_str()),
            ("other", "news.#")
        );
    }
}
