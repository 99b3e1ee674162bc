-- A real schema-1 minisir archive (step 0 of runs/climb3-s7, seed 7, pruned to 7 problems and their
-- solutions), as SQL: tests/test_archive_upgrade.py builds the file from it.
BEGIN TRANSACTION;
CREATE TABLE adapters (
    step INTEGER PRIMARY KEY REFERENCES steps(step),
    path TEXT NOT NULL,
    sha256 TEXT,
    created_at REAL
);
INSERT INTO "adapters" VALUES(0,'adapters/step-000000.gguf','4934682702e27a4777dc43291b678422e99b7a5649ca6b6b2d9f34c0f6966811',1.79657949945628786091e+09);
CREATE TABLE evals (
    id INTEGER PRIMARY KEY,
    step INTEGER,
    benchmark TEXT NOT NULL,
    metrics TEXT,
    created_at REAL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO "meta" VALUES('schema_version','1');
INSERT INTO "meta" VALUES('created_at','1796579267.887579');
CREATE TABLE problems (
    id INTEGER PRIMARY KEY,
    key TEXT,
    text TEXT,
    concepts TEXT,
    parent_id INTEGER REFERENCES problems(id),
    step INTEGER REFERENCES steps(step),
    role TEXT,
    method TEXT,
    valid INTEGER NOT NULL DEFAULT 1,
    invalid_reason TEXT,
    majority_answer TEXT,
    solve_rate REAL,
    n_parsed INTEGER,
    n_samples INTEGER,
    solvability REAL,
    diversity REAL,
    length REAL,
    format REAL,
    teacher_reward REAL,
    embedding BLOB,
    embed_model TEXT,
    raw TEXT,
    created_at REAL,
    extra TEXT
);
INSERT INTO "problems" VALUES(1,'0-0','What is 2 * 5 ?',NULL,NULL,0,'proposer','sqlm',1,NULL,'10',0.75,NULL,8,NULL,NULL,NULL,NULL,1.0,NULL,NULL,'What is 2 * 5 ?
</problem>
<program>
print(2 * 5)
',1.79657949945628786091e+09,'{"execute_error": null, "executed_answer": "10", "executed_source": "program", "finish_reason": "stop", "label": "10", "label_source": "executed", "majority_correct": true, "majority_size": 6, "n_tokens": 25, "program": "print(2 * 5)", "prompt_index": 0, "topic": "easy arithmetic with whole numbers below 100: one or two operations (+, -, *, /), or a one-step word problem; the answer is a whole number"}');
INSERT INTO "problems" VALUES(2,'0-1','What is 9 + 2 ?',NULL,NULL,0,'proposer','sqlm',1,NULL,'11',0.625,NULL,8,NULL,NULL,NULL,NULL,1.0,NULL,NULL,'What is 9 + 2 ?
</problem>
<program>
print(9 + 2)
',1.79657949945628786091e+09,'{"execute_error": null, "executed_answer": "11", "executed_source": "program", "finish_reason": "stop", "label": "11", "label_source": "executed", "majority_correct": true, "majority_size": 5, "n_tokens": 25, "program": "print(9 + 2)", "prompt_index": 0, "topic": "easy arithmetic with whole numbers below 100: one or two operations (+, -, *, /), or a one-step word problem; the answer is a whole number"}');
INSERT INTO "problems" VALUES(3,'0-2','What is 80 * 10 + 9?',NULL,NULL,0,'proposer','sqlm',1,NULL,'800',0.03125,NULL,32,NULL,NULL,NULL,NULL,1.0,NULL,NULL,'What is 80 * 10 + 9?
</problem>
<program>
print(80 * 10 + 9)
',1.79657949945628786091e+09,'{"execute_error": null, "executed_answer": "809", "executed_source": "program", "finish_reason": "stop", "label": "809", "label_source": "executed", "majority_correct": false, "majority_size": 1, "n_tokens": 35, "program": "print(80 * 10 + 9)", "prompt_index": 0, "stretch": true, "topic": "easy arithmetic with whole numbers below 100: one or two operations (+, -, *, /), or a one-step word problem; the answer is a whole number"}');
INSERT INTO "problems" VALUES(4,'0-3','What is 7 / 11 + ?',NULL,NULL,0,'proposer','sqlm',0,'no label: program failed: SyntaxError: invalid syntax',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0.0,NULL,NULL,'What is 7 / 11 + ?
</problem>
<program>
print(7/11+?)
',1.79657949945628786091e+09,'{"execute_error": "program failed: SyntaxError: invalid syntax", "executed_answer": null, "executed_source": null, "finish_reason": "stop", "n_tokens": 28, "program": "print(7/11+?)", "prompt_index": 0, "topic": "easy arithmetic with whole numbers below 100: one or two operations (+, -, *, /), or a one-step word problem; the answer is a whole number"}');
INSERT INTO "problems" VALUES(5,'0-4','Excuse me, skiing in the woods with one chop rope. What are you going to do?',NULL,NULL,0,'proposer','sqlm',1,NULL,'160',0.0,NULL,8,NULL,NULL,NULL,NULL,0.0,NULL,NULL,'Excuse me, skiing in the woods with one chop rope. What are you going to do?
</problem>
<program>
print(56 / 3)
',1.79657949945628786091e+09,'{"execute_error": null, "executed_answer": "56/3", "executed_source": "program", "finish_reason": "stop", "label": "56/3", "label_source": "executed", "majority_correct": false, "majority_size": 0, "n_tokens": 37, "program": "print(56 / 3)", "prompt_index": 1, "topic": "easy arithmetic with whole numbers below 100: one or two operations (+, -, *, /), or a one-step word problem; the answer is a whole number"}');
INSERT INTO "problems" VALUES(6,'0-5','How many is a whole number, 60?',NULL,NULL,0,'proposer','sqlm',1,NULL,'60',0.0,NULL,8,NULL,NULL,NULL,NULL,0.0,NULL,NULL,'How many is a whole number, 60?
</problem>
<program>
print(60 / 11)
',1.79657949945628786091e+09,'{"execute_error": null, "executed_answer": "60/11", "executed_source": "program", "finish_reason": "stop", "label": "60/11", "label_source": "executed", "majority_correct": false, "majority_size": 0, "n_tokens": 30, "program": "print(60 / 11)", "prompt_index": 1, "topic": "easy arithmetic with whole numbers below 100: one or two operations (+, -, *, /), or a one-step word problem; the answer is a whole number"}');
INSERT INTO "problems" VALUES(7,'0-6','Amy is going to buy a table for the house. She has 13 chairs, 4 driver’s seats, 3 kitchen tables, and 2 dressing tables. In order to get to the front door, her husband takes the one-left-only driver’s seat. How many chairs can she put into this table?',NULL,NULL,0,'proposer','sqlm',0,'no label: program leaves 4, 3, 2 of the problem unused',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0.0,NULL,NULL,'Amy is going to buy a table for the house. She has 13 chairs, 4 driver’s seats, 3 kitchen tables, and 2 dressing tables. In order to get to the front door, her husband takes the one-left-only driver’s seat. How many chairs can she put into this table?
</problem>
<program>
print(8 - 13)
',1.79657949945628786091e+09,'{"execute_error": "program leaves 4, 3, 2 of the problem unused", "executed_answer": null, "executed_source": null, "finish_reason": "stop", "n_tokens": 87, "program": "print(8 - 13)", "prompt_index": 1, "topic": "easy arithmetic with whole numbers below 100: one or two operations (+, -, *, /), or a one-step word problem; the answer is a whole number"}');
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    seed INTEGER,
    recipe TEXT NOT NULL,
    versions TEXT
);
INSERT INTO "runs" VALUES(1,1.79657926789166212081e+09,7,'{"eval": {"benchmark": "arithmetic-easy", "greedy": false, "k": 2, "max_tokens": 192, "n_questions": 50, "seed": 0, "temperature": 0.6, "top_p": 0.95}, "method": {"answer_kind": "number", "band_high": null, "band_low": 1, "curriculum_examples": 2, "curriculum_pool": 8, "curriculum_window": 10, "labels": "program", "leak_filter": true, "max_tests": 20, "min_tests": 5, "name": "sqlm", "pass_high": 1.0, "pass_low": 0.0, "proposals_per_prompt": 4, "proposals_per_step": 8, "proposer_max_tokens": 96, "proposer_update_every": 5, "require_majority": true, "sandbox": {"audit_hook": true, "concurrency": 2, "drop_privileges": true, "max_file_bytes": 1048576, "max_open_files": 64, "max_output_bytes": 65536, "max_processes": 64, "memory_mb": 512, "network_namespace": true, "python": null, "require_network_isolation": false, "run_as_uid": null, "timeout_s": 4.0}, "solver_max_tokens": 160, "solver_samples": 8, "solver_temperature": 0.6, "solver_top_p": 0.95, "stretch_max": 2, "stretch_samples": 24, "temperature": 1.0, "top_p": 1.0, "topic": "easy arithmetic with whole numbers below 100: one or two operations (+, -, *, /), or a one-step word problem; the answer is a whole number", "topic_examples": ["What is 47 + 38?", "What is 9 * 7?", "What is 84 - 29?", "What is 72 / 8?", {"problem": "Tom has 35 marbles and gives 12 of them to his sister. How many marbles does Tom have now?", "program": "print(35 - 12)"}, {"problem": "A box holds 6 eggs. How many eggs are in 5 boxes?", "program": "print(6 * 5)"}]}, "model": {"gguf": "bundled", "hf_dir": null, "prompt_style": "completion"}, "run": {"dir": "runs/climb3-s7", "eval_every": 10, "keep_adapters": 10, "next_command": null, "report_to": [], "rounds_per_step": 2, "seed": 7, "steps": 30}, "sampler": {"adapter_scale": 1.0, "backend": "llama_cpp", "max_concurrency": 8, "n_ctx": 8192, "n_gpu_layers": -1, "n_parallel": 32, "n_threads": null, "served_model": null, "timeout_s": 600.0, "url": null}, "trainer": {"device": null, "dtype": "auto", "eps_high": 0.28, "eps_low": 0.2, "gradient_checkpointing": false, "is_cap": 2.0, "kl_coef": 0.001, "learning_rate": 5e-05, "logprob_chunk": 256, "lora_alpha": 32.0, "lora_dropout": 0.0, "lora_rank": 16, "loss_agg": "token", "mask_truncated": true, "max_completion_tokens": 512, "max_grad_norm": 1.0, "micro_batch_tokens": 4096, "min_reward_std": 0.02, "scale_std": true, "seed": 0, "share_prompt": true, "sync_confidence": 3.0, "sync_gap_ratio": 3.0, "sync_tolerance": 0.2, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "updates_per_step": 1, "weight_decay": 0.0}}','{"gguf": "0.19.0", "llama-cpp-python": "0.3.36", "minisir": "0.1.0", "peft": "0.21.2", "sentence-transformers": "6.3.0", "torch": "2.13.0+cpu", "transformers": "5.25.0"}');
CREATE TABLE solutions (
    id INTEGER PRIMARY KEY,
    problem_id INTEGER NOT NULL REFERENCES problems(id),
    step INTEGER REFERENCES steps(step),
    text TEXT,
    n_tokens INTEGER,
    answer TEXT,
    agrees INTEGER,
    reward REAL,
    finish_reason TEXT,
    extra TEXT
);
INSERT INTO "solutions" VALUES(1,1,0,' 2 * 5 = 10.
Answer: \boxed{10}.
',19,'10',1,1.0,'stop',NULL);
INSERT INTO "solutions" VALUES(2,1,0,' 2 * 5 = 10.
The answer is \boxed{10}.
',20,'10',1,1.0,'stop',NULL);
INSERT INTO "solutions" VALUES(3,1,0,' 2 * 5 = 10.
Answer: 10.
',17,NULL,0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(4,1,0,' The answer is 2 * 5 = 10.
The answer is \boxed{10}.
',23,'10',1,1.0,'stop',NULL);
INSERT INTO "solutions" VALUES(5,1,0,' 2 * 5 = 10.
Answer: 10.
',17,NULL,0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(6,1,0,' 2 * 5 = 10. The answer is \boxed{10}.
',19,'10',1,1.0,'stop',NULL);
INSERT INTO "solutions" VALUES(7,1,0,' 2 * 5 = 10. The answer is \boxed{10}.
',19,'10',1,1.0,'stop',NULL);
INSERT INTO "solutions" VALUES(8,1,0,' 2 * 5 = 10 (divide by 2)
Answer: \boxed{10}.
',24,'10',1,1.0,'stop',NULL);
INSERT INTO "solutions" VALUES(9,2,0,' 9 + 2 = 11.
Answer: \boxed{11}.
',19,'11',1,1.0,'stop',NULL);
INSERT INTO "solutions" VALUES(10,2,0,' 9 + 2 = 11 + 2. The answer is \boxed{11}.
',22,'11',1,1.0,'stop',NULL);
INSERT INTO "solutions" VALUES(11,2,0,' 9 + 2 = 18.
Answer: 18.
',17,NULL,0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(12,2,0,' 9 + 2 = 18.
The answer is \boxed{18}.
',20,'18',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(13,2,0,' 9 + 2 = 11.
Answer: \boxed{11}.
',19,'11',1,1.0,'stop',NULL);
INSERT INTO "solutions" VALUES(14,2,0,' 9 + 2 = 11.
The answer is \boxed{11}.
',20,'11',1,1.0,'stop',NULL);
INSERT INTO "solutions" VALUES(15,2,0,' 9 + 2 = 18 + 2 = 27
The answer is \boxed{27}.
',26,'27',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(16,2,0,' 9 + 2 = 11.
Answer: \boxed{11}.
',19,'11',1,1.0,'stop',NULL);
INSERT INTO "solutions" VALUES(17,3,0,' 80 * 10 = 8000 + 9 = 8010. The answer is \boxed{8010}.
',34,'8010',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(18,3,0,' 80 * 10 = 8000 + 9 = 8900. The answer is \boxed{8900}.
',34,'8900',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(19,3,0,' 80 * 10 + 9 = 80000 * 10 + 90000 = 8000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',160,NULL,0,0.0,'length',NULL);
INSERT INTO "solutions" VALUES(20,3,0,' Multiply 80 and 10: \boxed{80 * 10 + 9} = 80 * 10 + 80 * 10 = 8000 + 8000 = 16000. The answer is \boxed{16000}.
',70,'16000',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(21,3,0,' 80 * 10 = 8000000 + 9 = 8090000. The answer is \boxed{8090000}.
',43,'8090000',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(22,3,0,' 80 * 10 = 8000 + 9 = 8090 = 800000000. The answer is \boxed{800000000}.
',50,'800000000',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(23,3,0,' 80 * 10 = 8000 + 9 = 8090. The answer is \boxed{8090}.
',34,'8090',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(24,3,0,' The answer is \boxed{160}.
',10,'160',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(25,3,0,' 80 * 10 + 9 = 8000 + 9 = 809. The answer is \boxed{809}.
',35,'809',1,1.0,'stop',NULL);
INSERT INTO "solutions" VALUES(26,3,0,' The answer is 80 * 10 + 9 = 80 * 10 + 9 * 10 = 80 * 10 + 9 * 10 = 80 * 10 + 9 * 10 = 80 * 10 + 9 * 10 = 80 * 10 + 9 * 10 = 80 * 10 + 9 * 10 = 80 * 10 + 9 * 10 = 80 * 10 + 9 * 10 = 80 * 10 + 9 * 10 = 80 * 10 + 9 *',160,NULL,0,0.0,'length',NULL);
INSERT INTO "solutions" VALUES(27,3,0,' The answer is 80 * 10 = 800. The answer is \boxed{800}.
',26,'800',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(28,3,0,' 80 * 10 = 8000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',160,NULL,0,0.0,'length',NULL);
INSERT INTO "solutions" VALUES(29,3,0,' 80 * 10 = 800 + 9 = 819. The answer is \boxed{819}.
',31,'819',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(30,3,0,' 80 = 80 * 10 + 9.
The answer is \boxed{80}.
',25,'80',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(31,3,0,' Multiply 80 by 10 to get the answer: 80 * 10 = 8000. The answer is \boxed{8000}.
',38,'8000',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(32,3,0,' 80 * 10 = 8000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',160,NULL,0,0.0,'length',NULL);
INSERT INTO "solutions" VALUES(33,3,0,' 80 * 10 = 8000 + 9 = 8090
Answer: \boxed{8090}.
',33,'8090',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(34,3,0,' 80 * 10 + 9 = 800 + 9 = 809. The answer is \boxed{800}.
',34,'800',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(35,3,0,' 80 * 10 + 9 = 8000 + 9 = 809. The answer is \boxed{8000}.
',36,'8000',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(36,3,0,' 80 * 10 + 9 = 80 * 10 + 80 * 10 = 8000 * 10 = 80000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',160,NULL,0,0.0,'length',NULL);
INSERT INTO "solutions" VALUES(37,3,0,' 80 * 10 = 800.
Answer: \boxed{800}.
',23,'800',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(38,3,0,' 80 * 10 = 800 + 9 = 890. The answer is \boxed{890}.
',31,'890',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(39,3,0,' The answer is \boxed{100 * 10 + 9}.
',17,'100 * 10 + 9',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(40,3,0,' 80 * 10 = 8000 + 9 = 8010. The answer is \boxed{8010}.
',34,'8010',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(41,3,0,' 80 * 10 = 8000000 + 9 = 8090000. The answer is \boxed{8090000}.
',43,'8090000',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(42,3,0,' 80 * 10 = 8000 + 9 = 8090. The answer is \boxed{8000}.
',34,'8000',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(43,3,0,' 80 * 10 = 800 * 10 = 800000 = \boxed{8000000}.
',36,'8000000',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(44,3,0,' 80 * 10 + 9 = 800 * 10 + 800 * 10 = 8000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',160,NULL,0,0.0,'length',NULL);
INSERT INTO "solutions" VALUES(45,3,0,' 80 * 10 + 9 = 80 * 10 + 80 * 10 = 100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',160,NULL,0,0.0,'length',NULL);
INSERT INTO "solutions" VALUES(46,3,0,' 80 * 10 = 800 * 10 + 9
The answer is \boxed{900}.
',30,'900',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(47,3,0,' 80 * 10 = 8000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',160,NULL,0,0.0,'length',NULL);
INSERT INTO "solutions" VALUES(48,3,0,' 80 * 10 + 9 = 80 * 10 + 80 * 10 = 800000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',160,NULL,0,0.0,'length',NULL);
INSERT INTO "solutions" VALUES(49,5,0,' You can use your rope to jump from a tree, but it will be harder. You can also use your rope to climb up a tree. You can use your rope to jump from a tree, but it will be harder. You can use your rope to climb up a tree. You can use your rope to jump from a tree, but it will be harder. You can use your rope to climb up a tree. You can use your rope to jump from a tree, but it will be harder. You can use your rope to climb up a tree. You can use your rope to jump from a tree, but it will be harder. You can use your rope to climb up a tree. You can use your rope to jump from a tree, but it will be harder. You can',160,NULL,0,0.0,'length',NULL);
INSERT INTO "solutions" VALUES(50,5,0,' You need to find the circumference of the forest to the nearest tenth of a meter. The circumference is 160 meters. The answer is \boxed{160}.
',36,'160',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(51,5,0,' You have to use a double rope, which is 100 feet long. A double rope is a long rope that has a double knot on it. The rope is 100 feet long. The rope is 100 feet long. The rope is 100 feet long.
',62,NULL,0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(52,5,0,' One chop rope will take you 400 meters. The answer is \boxed{400}.
',22,'400',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(53,5,0,' I will use the rope to walk around the snow. The answer is \boxed{I will use the rope to walk around the snow, I will use the rope to walk around the snow, I will use the rope to walk around the snow, I will use the rope to walk around the snow, I will use the rope to walk around the snow, I will use the rope to walk around the snow, I will use the rope to walk around the snow, I will use the rope to walk around the snow, I will use the rope to walk around the snow, I will use the rope to walk around the snow, I will use the rope to walk around the snow, I will use the rope to walk around the snow, I will use the rope to walk around the snow,',160,NULL,0,0.0,'length',NULL);
INSERT INTO "solutions" VALUES(54,5,0,' 100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',160,NULL,0,0.0,'length',NULL);
INSERT INTO "solutions" VALUES(55,5,0,' Skiing is a skill and a skill requires a lot of work. In order to ski, you need to:
a. be able to lift a 100 kg ski
b. be able to ski with one chop rope
c. be able to lift a 100 kg ski
Solution: a) you need to lift a 100 kg ski.
b) you need to ski with one chop rope.
c) you need to lift a 100 kg ski.
',106,NULL,0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(56,5,0,' If you have one chop rope, you can ski in the woods. It is a shorter route than the other. If you have two chop ropes, you can ski in the woods in one. The answer is \boxed{1}.
',47,'1',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(57,6,0,' 60 is a whole number, so the answer is \boxed{60}.
',18,'60',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(58,6,0,' 1 is a whole number, because 60 is 60 - 1 = 61.
The answer is \boxed{61}.
',33,'61',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(59,6,0,' 60 is a whole number, because 60 is the same as 60 divided by 2.
Answer: 60.
',31,NULL,0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(60,6,0,' 60 is a whole number.
',8,NULL,0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(61,6,0,' 100.
The answer is \boxed{101}.
',16,'101',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(62,6,0,' 60 is a whole number, because the answer is a whole number.
',16,NULL,0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(63,6,0,' 60 is a whole number, 60 divided by 2 = 20.
The answer is \boxed{20}.
',30,'20',0,0.0,'stop',NULL);
INSERT INTO "solutions" VALUES(64,6,0,' 60 is a whole number. The answer is \boxed{60}.
',17,'60',0,0.0,'stop',NULL);
CREATE TABLE steps (
    step INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    metrics TEXT
);
INSERT INTO "steps" VALUES(0,1.79657949945628786091e+09,'{"curriculum_pool": 0.0, "label_audited": 11, "label_precision": 0.18181818181818182, "labelled_rate": 0.75, "leak_rate": 0.0625, "no_majority_rate": 0.0, "proposals": 16, "proposer_groups_trained": 0, "rounds": 2, "sampled_tokens": 6996.0, "seconds_execute": 0.145, "seconds_export": 0.139, "seconds_parse": 0.008, "seconds_proposer": 16.801, "seconds_rewards": 0.531, "seconds_solver": 35.829, "seconds_step": 230.161, "seconds_stretch": 137.813, "seconds_sync": 5.731, "seconds_train": 33.159, "solution_tokens_mean": 46.15190972222222, "solve_rate_mean": 0.1421875, "solver_groups_trained": 4, "stretch_problems": 2, "stretch_solved": 1, "student_reward_mean": 0.09895833333333333, "student_tokens_per_s": 90.765, "sync_effect": 0.0, "sync_gap": 0.03976, "sync_match": 1.0, "sync_tokens": 20.0, "sync_z": 0.0, "teacher_reward_mean": 0.25, "teacher_tokens_per_s": 53.45, "topic": "easy arithmetic with whole numbers below 100: one or two operations (+, -, *, /), or a one-step word problem; the answer is a whole number", "train_adv_abs_mean": 0.6160800616418801, "train_clip_frac": 0.0, "train_entropy": 0.3120887070495696, "train_grad_norm": 1.8610531091690063, "train_groups_skipped": 0.0, "train_groups_used": 4.0, "train_is_capped_frac": 0.0, "train_is_weight_mean": 0.9992784497287971, "train_kl": 0.0, "train_logprob_gap": 0.03026629875885962, "train_loss": -0.05580671253846958, "train_ratio_dev": 0.0, "train_reward_mean": 0.25, "train_samples": 56.0, "train_sequences": 47.0, "train_time_s": 33.1356710580003, "train_tokens": 1346.0, "train_updates": 1.0, "trained_token_share": 0.1924, "valid_rate": 1.0}');
CREATE INDEX problems_step ON problems(step);
CREATE INDEX problems_parent ON problems(parent_id);
CREATE INDEX problems_valid ON problems(valid);
CREATE INDEX solutions_problem ON solutions(problem_id);
COMMIT;
PRAGMA user_version = 1;
