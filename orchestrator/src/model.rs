//! The `llm` strategy's part in a run: its settings resolved from
//! `[signals.llm]` (the API key from the environment or a file, the answer
//! file next to the data), the one advisor a run shares between its signal
//! agents, the line `bistoury run` prints about it, and what the report
//! keeps of it.

use std::path::PathBuf;

use agent_signals::config::LlmConfig;
use agent_signals::llm::advisor::{Consulting, ModelAdvisor, SharedAdvisor};
use agent_signals::llm::cache::{AnswerCache, CacheMode};
use agent_signals::llm::client::{ModelSettings, Spent};
use bus_core::runtime::StopSignal;
use serde::Serialize;

use crate::config::{BistouryConfig, DataSource};

/// The answer file's name beside a data file (`<file>` + this) or in the
/// output directory.
const ANSWER_FILE: &str = "llm-answers.jsonl";

/// Where `[signals.llm]`'s answers are kept: `cache`, else next to the
/// data file, else in the output directory.
pub fn answer_file(config: &BistouryConfig, llm: &LlmConfig) -> PathBuf {
    if let Some(path) = &llm.cache {
        return path.clone();
    }
    match config.data.source() {
        Ok(DataSource::File(file)) => {
            let mut name = file.path.clone().into_os_string();
            name.push(format!(".{ANSWER_FILE}"));
            PathBuf::from(name)
        }
        _ => config.run.output_dir.join(ANSWER_FILE),
    }
}

/// The API key `llm` names: the environment variable's value or the
/// file's first line; `None` when it names neither. Replay needs none.
fn api_key(llm: &LlmConfig) -> Result<Option<String>, String> {
    if llm.cache_mode == CacheMode::Replay {
        return Ok(None);
    }
    if let Some(name) = &llm.api_key_env {
        return match std::env::var(name) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_string())),
            _ => Err(format!(
                "signals.llm.api_key_env: the environment variable {name} is not set \
                 (or is empty); set it, or use cache_mode = \"replay\" to read only recorded answers"
            )),
        };
    }
    if let Some(path) = &llm.api_key_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "signals.llm.api_key_file: cannot read {}: {e}",
                path.display()
            )
        })?;
        let key = text.lines().next().unwrap_or_default().trim();
        return match key.is_empty() {
            true => Err(format!(
                "signals.llm.api_key_file: {} has no key on its first line",
                path.display()
            )),
            false => Ok(Some(key.to_string())),
        };
    }
    Ok(None)
}

/// Everything a run needs to ask the model.
#[derive(Debug, Clone)]
pub struct ModelPlan {
    /// Where the model is and the budget.
    pub settings: ModelSettings,
    /// When it is asked.
    pub consulting: Consulting,
    /// The answer file.
    pub answers: PathBuf,
    /// How the answer file is used.
    pub mode: CacheMode,
}

/// Everything a run needs to ask the model, or every problem, each
/// naming its key: the key that cannot be had, the answer file a replay
/// does not find.
pub fn settings(config: &BistouryConfig) -> Result<Option<ModelPlan>, Vec<String>> {
    let Some(llm) = config.signals.model() else {
        return Ok(None);
    };
    let mut errors = Vec::new();
    let key = api_key(llm).map_err(|e| errors.push(e)).ok().flatten();
    let file = answer_file(config, llm);
    if llm.cache_mode == CacheMode::Replay && !file.is_file() {
        errors.push(format!(
            "signals.llm.cache: {} does not exist (cache_mode = \"replay\" reads only recorded \
             answers: record them first with cache_mode = \"record\")",
            file.display()
        ));
    }
    let interval_ms = config.data.bar_interval_ms().map_err(|e| errors.push(e));
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Some(ModelPlan {
        settings: llm.client_settings(key),
        consulting: llm.consulting(interval_ms.unwrap_or_default()),
        answers: file,
        mode: llm.cache_mode,
    }))
}

/// The run's advisor, when `[signals.llm]` is on; a replay without an
/// answer raises `stop`.
pub fn advisor(
    config: &BistouryConfig,
    stop: &StopSignal,
) -> Result<Option<SharedAdvisor>, String> {
    let Some(plan) = settings(config).map_err(|errors| errors.join("; "))? else {
        return Ok(None);
    };
    let cache = AnswerCache::open(&plan.answers, plan.mode).map_err(|e| e.to_string())?;
    let advisor = ModelAdvisor::new(plan.settings, cache, plan.consulting)?.with_stop(stop.clone());
    Ok(Some(advisor.shared()))
}

/// The line a run prints about its model: which one, where, the budget,
/// when it is asked and where its answers are kept; `None` when it is off.
pub fn describe(config: &BistouryConfig) -> Option<String> {
    let llm = config.signals.model()?;
    let asked = match (llm.ask_every_bars, llm.ask_on_disagreement) {
        (0, _) => "when the strategies disagree".to_string(),
        (n, true) => format!("every {n} bars and when the strategies disagree"),
        (n, false) => format!("every {n} bars"),
    };
    let mode = match llm.cache_mode {
        CacheMode::Record => "recorded to",
        CacheMode::Replay => "replayed from",
        CacheMode::Live => "not kept; file unused:",
    };
    Some(format!(
        "model:     {} at {}, budget {} calls and {} tokens, asked {asked}, answers {mode} {}",
        llm.model,
        llm.base_url.trim(),
        llm.max_calls,
        llm.max_tokens,
        answer_file(config, llm).display()
    ))
}

/// What the report keeps of the model: the same whether its answers came
/// from the model or from a recording (what this run spent is printed,
/// not kept: see [`spent_line`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModelUsage {
    /// The model.
    pub model: String,
    /// Questions put.
    pub questions: u64,
    /// Valid answers (each a signal named `llm`).
    pub answers: u64,
    /// Answers refused (malformed, wrong shape, out of range).
    pub refused: u64,
    /// Questions that got no answer (timeout, HTTP error).
    pub failed: u64,
    /// Questions not asked: the budget was spent.
    pub over_budget: u64,
    /// Tokens the answers reported.
    pub tokens: u64,
}

impl ModelUsage {
    /// From what an advisor saw.
    pub fn of(model: &str, spent: &Spent) -> Self {
        Self {
            model: model.to_string(),
            questions: spent.questions,
            answers: spent.answers,
            refused: spent.refused,
            failed: spent.failed,
            over_budget: spent.over_budget,
            tokens: spent.answer_tokens,
        }
    }

    /// The report table's line.
    pub fn to_line(&self) -> String {
        format!(
            "model            {}: {} questions, {} answers, {} refused, {} without answer, {} over budget ({} tokens); the technical signals decided alone on the rest",
            self.model,
            self.questions,
            self.answers,
            self.refused,
            self.failed,
            self.over_budget,
            self.tokens
        )
    }
}

/// What this run spent on the model, for the console.
pub fn spent_line(spent: &Spent) -> String {
    format!(
        "model cost: {} calls, {} tokens this run; {} questions answered from the answer file",
        spent.calls, spent.tokens, spent.cached
    )
}
