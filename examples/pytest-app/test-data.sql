-- Test data: applied by `database patch`, and baked into the pytest plugin's template.
INSERT INTO todo.task (title) VALUES ('write the tests'), ('ship it');
