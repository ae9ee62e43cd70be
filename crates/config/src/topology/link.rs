//! The link step of phase 2: references checked against every declared entry, pool instances
//! expanded (one per key), and reference cycles among fallback groups and pools found.

use super::*;

/// A reference to a name that is not declared: disabled, or a typo.
pub(super) fn dangling<'a, T>(
    reference: &Ref<T>,
    what: &str,
    name: &str,
    kind: Kind,
    candidates: impl IntoIterator<Item = &'a str>,
    declared: &Declared<'_>,
) -> Diagnostic {
    let help = if declared
        .disabled
        .get(&kind)
        .is_some_and(|d| d.contains(name))
    {
        Some(format!(
            "{what} `{name}` is disabled in llms/_registry.toml"
        ))
    } else {
        did_you_mean(name, candidates)
    };
    reference.diagnostic(
        DiagnosticKind::DanglingReference,
        format!("{what} `{name}` does not exist"),
        help,
    )
}

/// Checks `provider/model`; returns the provider's key count when known.
pub(super) fn check_model(
    model: &Ref<ModelRef>,
    declared: &Declared<'_>,
    slot: &mut Slot,
) -> Option<usize> {
    let provider = model.value.provider.as_str();
    let Some(draft) = declared.providers.get(provider) else {
        let all: Vec<String> = declared
            .providers
            .iter()
            .flat_map(|(p, d)| {
                d.iter()
                    .flat_map(move |d| d.models.keys().map(move |m| format!("{p}/{m}")))
            })
            .collect();
        let help = if declared
            .disabled
            .get(&Kind::Providers)
            .is_some_and(|d| d.contains(provider))
        {
            Some(format!(
                "provider `{provider}` is disabled in llms/_registry.toml"
            ))
        } else {
            did_you_mean(&model.value.to_string(), all.iter().map(String::as_str))
                .or_else(|| did_you_mean(provider, declared.providers.keys().map(String::as_str)))
        };
        slot.diagnostics.push(model.diagnostic(
            DiagnosticKind::DanglingReference,
            format!(
                "model `{}` does not exist: there is no provider `{provider}`",
                model.value
            ),
            help,
        ));
        return None;
    };
    slot.deps.insert(Entity::Provider(provider.to_owned()));
    let draft = (*draft)?;
    if !draft.models.contains_key(model.value.model.as_str()) {
        slot.diagnostics.push(
            model.diagnostic(
                DiagnosticKind::DanglingReference,
                format!(
                    "model `{}` does not exist: provider `{provider}` does not define `{}`",
                    model.value, model.value.model
                ),
                did_you_mean(
                    model.value.model.as_str(),
                    draft.models.keys().map(String::as_str),
                )
                .or_else(|| {
                    Some(format!(
                        "add [{}] to the provider's file",
                        KeyPath::of(["models", model.value.model.as_str()])
                    ))
                }),
            ),
        );
        return None;
    }
    Some(draft.spec.api_keys.len().max(1))
}

pub(super) fn check_group_ref<'d>(
    reference: &Ref<GroupRef>,
    declared: &'d Declared<'d>,
    slot: &mut Slot,
) -> Option<&'d GroupDraft> {
    let name = reference.value.group.as_str();
    let Some(draft) = declared.groups.get(name) else {
        slot.diagnostics.push(dangling(
            reference,
            "task group",
            name,
            Kind::TaskGroups,
            declared.groups.keys().map(String::as_str),
            declared,
        ));
        return None;
    };
    slot.deps.insert(Entity::Group(name.to_owned()));
    let draft = (*draft)?;
    if let Some(echelon) = &reference.value.echelon
        && !draft.echelons.iter().any(|e| e.spec.name == *echelon)
    {
        slot.diagnostics.push(reference.diagnostic(
            DiagnosticKind::DanglingReference,
            format!("task group `{name}` has no echelon `{echelon}`"),
            did_you_mean(
                echelon.as_str(),
                draft.echelons.iter().map(|e| e.spec.name.as_str()),
            ),
        ));
        return None;
    }
    Some(draft)
}

pub(super) fn check_pool(reference: &Ref<PoolName>, declared: &Declared<'_>, slot: &mut Slot) {
    let name = reference.value.as_str();
    if declared.pools.contains_key(name) {
        slot.deps.insert(Entity::Pool(name.to_owned()));
    } else {
        slot.diagnostics.push(dangling(
            reference,
            "pool",
            name,
            Kind::Pools,
            declared.pools.keys().map(String::as_str),
            declared,
        ));
    }
}

pub(super) fn link_pool(
    name: &str,
    draft: &PoolDraft,
    declared: &Declared<'_>,
    slot: &mut Slot,
) -> Vec<InstanceSpec> {
    let mut instances: Vec<InstanceSpec> = Vec::new();
    for entry in &draft.entries {
        let Some(keys) = check_model(&entry.model, declared, slot) else {
            continue;
        };
        let model = declared.providers[entry.model.value.provider.as_str()]
            .and_then(|p| p.models.get(entry.model.value.model.as_str()))
            .expect("checked above");
        let indices: Vec<usize> = match &entry.key {
            Some(key) if usize::from(key.value) >= keys => {
                slot.diagnostics.push(key.diagnostic(
                    DiagnosticKind::OutOfRange,
                    format!(
                        "`key` {} is out of range: provider `{}` has {keys} key{}",
                        key.value,
                        entry.model.value.provider,
                        if keys == 1 { "" } else { "s" }
                    ),
                    Some(format!("keys are numbered from 0 to {}", keys - 1)),
                ));
                continue;
            }
            Some(key) => vec![usize::from(key.value)],
            None => (0..keys).collect(),
        };
        for index in indices {
            let id = InstanceId::new(
                entry.model.value.clone(),
                u16::try_from(index).unwrap_or(u16::MAX),
            );
            if instances.iter().any(|i| i.id == id) {
                slot.diagnostics.push(entry.model.diagnostic(
                    DiagnosticKind::Duplicate,
                    format!("instance `{id}` is listed twice in pool `{name}`"),
                    Some("pin different keys with `key = N`, or list the model once".into()),
                ));
                continue;
            }
            instances.push(InstanceSpec {
                id,
                upstream_name: model.upstream_name.clone(),
                weight: entry.weight,
                limits: Limits {
                    rpm: tighter(model.limits.rpm, entry.limits.rpm),
                    tpm: tighter(model.limits.tpm, entry.limits.tpm),
                    max_concurrency: tighter(
                        model.limits.max_concurrency,
                        entry.limits.max_concurrency,
                    ),
                },
                context_window: model.context_window,
            });
        }
    }
    for reference in &draft.task_groups {
        let Some(group) = check_group_ref(reference, declared, slot) else {
            continue;
        };
        for echelon in &group.echelons {
            if reference
                .value
                .echelon
                .as_ref()
                .is_some_and(|e| *e != echelon.spec.name)
            {
                continue;
            }
            for target in &echelon.refs {
                match &target.value {
                    EchelonTarget::Model(model) => {
                        let model_ref = Ref { value: model.clone(), location: reference.location.clone(), key: reference.key.clone() };
                        // The group reports its own dangling models; the pool only depends on them.
                        let mut scratch = Slot::default();
                        if check_model(&model_ref, declared, &mut scratch).is_none() {
                            slot.deps.extend(scratch.deps);
                            continue;
                        }
                        slot.deps.extend(scratch.deps);
                        let spec = &declared.providers[model.provider.as_str()].and_then(|p| p.models.get(model.model.as_str())).expect("checked above");
                        let keys = declared.providers[model.provider.as_str()].map_or(1, |p| p.spec.api_keys.len().max(1));
                        for index in 0..keys {
                            let id = InstanceId::new(model.clone(), u16::try_from(index).unwrap_or(u16::MAX));
                            if instances.iter().any(|i| i.id == id) {
                                continue;
                            }
                            instances.push(InstanceSpec {
                                id,
                                upstream_name: spec.upstream_name.clone(),
                                weight: 1,
                                limits: spec.limits,
                                context_window: spec.context_window,
                            });
                        }
                    }
                    EchelonTarget::Pool(pool) => slot.diagnostics.push(
                        Diagnostic::warning(
                            DiagnosticKind::Unused,
                            format!("`pool:{pool}` in `{}.{}` is not a model and is not copied into pool `{name}`", reference.value.group, echelon.spec.name),
                        )
                        .at(reference.location.clone())
                        .key(reference.key.clone())
                        .help("a pool takes the models of an echelon; list the other pool in `fallback_pools` instead"),
                    ),
                }
            }
        }
    }
    for reference in &draft.fallback_pools {
        check_pool(reference, declared, slot);
    }
    if instances.is_empty()
        && !draft.task_groups.is_empty()
        && draft.entries.is_empty()
        && !slot
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    {
        slot.diagnostics.push(missing(
            &draft.here,
            "instances",
            format!("pool `{name}` has no instances: its task groups list no models"),
        ));
    }
    instances
}

pub(super) fn link_group(draft: &GroupDraft, declared: &Declared<'_>, slot: &mut Slot) {
    for echelon in &draft.echelons {
        for target in &echelon.refs {
            match &target.value {
                EchelonTarget::Model(model) => {
                    let model_ref = Ref {
                        value: model.clone(),
                        location: target.location.clone(),
                        key: target.key.clone(),
                    };
                    check_model(&model_ref, declared, slot);
                }
                EchelonTarget::Pool(pool) => {
                    let pool_ref = Ref {
                        value: pool.clone(),
                        location: target.location.clone(),
                        key: target.key.clone(),
                    };
                    check_pool(&pool_ref, declared, slot);
                }
            }
        }
    }
    for reference in &draft.fallback_groups {
        check_group_ref(reference, declared, slot);
    }
}

pub(super) fn link_wrapper(draft: &WrapperDraft, declared: &Declared<'_>, slot: &mut Slot) {
    let target = &draft.target;
    match draft.kind {
        WrapperKind::TaskGroup => {
            let name = strip(&target.value, "group:");
            if declared.groups.contains_key(name) {
                slot.deps.insert(Entity::Group(name.to_owned()));
            } else {
                let mut d = dangling(
                    target,
                    "task group",
                    name,
                    Kind::TaskGroups,
                    declared.groups.keys().map(String::as_str),
                    declared,
                );
                if d.help.is_none() && declared.pools.contains_key(name) {
                    d.help = Some(format!("`{name}` is a pool: set `type = \"pool\"`"));
                }
                slot.diagnostics.push(d);
            }
        }
        WrapperKind::Pool => {
            let name = strip(&target.value, "pool:");
            if declared.pools.contains_key(name) {
                slot.deps.insert(Entity::Pool(name.to_owned()));
            } else {
                let mut d = dangling(
                    target,
                    "pool",
                    name,
                    Kind::Pools,
                    declared.pools.keys().map(String::as_str),
                    declared,
                );
                if d.help.is_none() && declared.groups.contains_key(name) {
                    d.help = Some(format!(
                        "`{name}` is a task group: set `type = \"task_group\"`"
                    ));
                }
                slot.diagnostics.push(d);
            }
        }
        WrapperKind::Direct => {
            match ModelRef::parse(&target.value).filter(|m| m.model.is_valid()) {
                Some(model) => {
                    let model_ref = Ref {
                        value: model,
                        location: target.location.clone(),
                        key: target.key.clone(),
                    };
                    check_model(&model_ref, declared, slot);
                }
                None => slot.diagnostics.push(target.diagnostic(
                    DiagnosticKind::InvalidValue,
                    format!("invalid model reference `{}`", target.value),
                    Some("a `direct` wrapper targets \"provider/model\"".into()),
                )),
            }
        }
    }
}

/// A cycle: the names in order, and the reference that closes it.
pub(super) struct Cycle {
    names: Vec<String>,
    closing: Ref<String>,
}

pub(super) type Edges<T> = BTreeMap<String, Vec<(String, Ref<T>)>>;

pub(super) fn find_cycles<T: fmt::Debug>(edges: &Edges<T>) -> Vec<Cycle> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<T>(
        node: &str,
        edges: &Edges<T>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
        cycles: &mut Vec<Cycle>,
    ) {
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for (next, reference) in edges.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut names = stack[start..].to_vec();
                    names.push(next.clone());
                    cycles.push(Cycle {
                        names,
                        closing: Ref {
                            value: next.clone(),
                            location: reference.location.clone(),
                            key: reference.key.clone(),
                        },
                    });
                }
                Some(Mark::Done) => {}
                None if edges.contains_key(next.as_str()) => {
                    visit(next, edges, marks, stack, cycles)
                }
                None => {}
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut cycles = Vec::new();
    for node in edges.keys() {
        if !marks.contains_key(node.as_str()) {
            visit(node, edges, &mut marks, &mut Vec::new(), &mut cycles);
        }
    }
    cycles
}

pub(super) fn report_cycle(
    cycle: &Cycle,
    what: &str,
    entity: fn(String) -> Entity,
    slots: &mut BTreeMap<Entity, Slot>,
) {
    let diagnostic = cycle.closing.diagnostic(
        DiagnosticKind::ReferenceCycle,
        format!("{what} form a cycle: {}", cycle.names.join(" → ")),
        Some("a request would go round forever; remove one reference of the cycle".into()),
    );
    let mut members: Vec<&String> = cycle.names.iter().collect();
    members.dedup();
    for name in members {
        if let Some(slot) = slots.get_mut(&entity(name.clone())) {
            slot.diagnostics.push(diagnostic.clone());
        }
    }
}
